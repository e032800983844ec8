// The `hearth` command line.
import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Session } from '../api/schema.js';
import { hearthHome } from '../config.js';
import { HearthError } from '../errors.js';
import { callApi, ensureLocalDaemon, isHealthy, type Target } from './client.js';
import { createSession, executeCommand, readCode } from './commands.js';
import { CurrentSession } from './session-store.js';

const HELP = `Usage: hearth <command> [options]

Commands:
  setup                      Build the guest kernel and rootfs (cached), start hearthd
                             and run Python in a first microVM.
  execute                    Run code in the current session, creating it if needed.
    --code <string>          The program to run.
    --file <path>            Read the program from a file ("-" for stdin).
    --language <name>        python or bash (default: python).
    --timeout <seconds>      Stop the call after this many seconds (default: 60).
    --env <KEY=VALUE>        Set a variable for this call only; repeatable.
    --cwd <path>             Run in this directory of the VM.
    --session <id>           Use this session instead of the current one.
    --json                   Print the whole result as JSON instead of the output.
  session create             Start a new session and make it the current one.
    --cpus <n>               vCPUs, 1 to 8 (default: 1).
    --memory <MiB>           Guest memory in MiB (default: 512).
    --lifetime <seconds>     Close the session after this long (default: 3600).
    --env <KEY=VALUE>        Set a variable for the whole session; repeatable.
    --disk <MiB>             Scratch disk quota in MiB (default: 2048).
    --allow-domain <name>    Allow egress to a domain (wildcards like *.example.org); repeatable.
    --allow-cidr <cidr>      Allow egress to an IPv4 range; repeatable.
    --allow-package-managers Allow the host's package indexes (pip, npm, apt).
  session list               List open sessions.
  session info [id]          Show a session (default: the current one).
  session close [id]         Close a session (default: the current one).
  upload <local> <remote>    Stream a local file into the current session's VM.
  download <remote> <local>  Stream a file out of the VM; <local> may be a directory.
  keys create --name <name>  Create an API key and print it once.
  keys list                  List API keys (never the keys themselves).
  keys revoke <id>           Revoke an API key.
  serve [--listen <addr>]    Run hearthd in the foreground on a Unix socket path or
                             host:port (default: $HEARTH_HOME/hearthd.sock). On TCP every
                             request needs an API key.
  server status|stop|run     Inspect, stop, or run the local hearthd in the foreground.

Environment:
  HEARTH_HOME                State directory (default: ~/.hearth).
  HEARTH_URL, HEARTH_API_KEY Use a remote hearthd instead of the local one.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const home = hearthHome();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(HELP);
    return 0;
  }
  switch (command) {
    case 'execute':
      return execute(home, rest);
    case 'session':
      return session(home, rest);
    case 'server':
      return server(home, rest);
    case 'serve': {
      const { values } = parseArgs({
        args: rest,
        options: { listen: { type: 'string' } },
        strict: true,
      });
      if (values.listen) process.env.HEARTH_LISTEN = values.listen;
      return server(home, ['run']);
    }
    case 'upload':
    case 'download':
      return transfer(home, command, rest);
    case 'keys': {
      const { keysCommand } = await import('./keys.js');
      return keysCommand(home, rest);
    }
    case 'setup': {
      const { runSetup } = await import('./setup.js');
      return runSetup(home, rest);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    default:
      throw new HearthError('invalid_arguments', `Unknown command "${command}".`, 2);
  }
}

async function target(home: string): Promise<Target> {
  if (process.env.HEARTH_URL) {
    return { baseUrl: process.env.HEARTH_URL, apiKey: process.env.HEARTH_API_KEY };
  }
  return ensureLocalDaemon(home);
}

async function execute(home: string, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      code: { type: 'string' },
      file: { type: 'string' },
      language: { type: 'string', default: 'python' },
      timeout: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      cwd: { type: 'string' },
      session: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const language = values.language;
  if (language !== 'python' && language !== 'bash') {
    throw new HearthError('invalid_arguments', '--language must be python or bash.', 2);
  }
  const code = await readCode({ code: values.code, file: values.file });
  return executeCommand(await target(home), new CurrentSession(home), {
    code,
    language,
    json: values.json,
    timeoutSeconds:
      values.timeout === undefined ? undefined : positiveNumber('--timeout', values.timeout),
    env: parseEnv(values.env),
    cwd: values.cwd,
    sessionId: values.session,
  });
}

async function session(home: string, args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const current = new CurrentSession(home);
  if (action === 'create') {
    const { values } = parseArgs({
      args: rest,
      options: {
        cpus: { type: 'string' },
        memory: { type: 'string' },
        lifetime: { type: 'string' },
        disk: { type: 'string' },
        env: { type: 'string', multiple: true, default: [] },
        'allow-domain': { type: 'string', multiple: true, default: [] },
        'allow-cidr': { type: 'string', multiple: true, default: [] },
        'allow-package-managers': { type: 'boolean', default: false },
      },
      strict: true,
    });
    const egress = {
      allow_domains: values['allow-domain'],
      allow_cidrs: values['allow-cidr'],
      allow_package_managers: values['allow-package-managers'],
    };
    const created = await createSession(await target(home), {
      diskMib: values.disk === undefined ? undefined : positiveNumber('--disk', values.disk),
      egress:
        egress.allow_domains.length || egress.allow_cidrs.length || egress.allow_package_managers
          ? egress
          : undefined,
      cpuCount: values.cpus === undefined ? undefined : positiveNumber('--cpus', values.cpus),
      memoryMib:
        values.memory === undefined ? undefined : positiveNumber('--memory', values.memory),
      lifetimeSeconds:
        values.lifetime === undefined ? undefined : positiveNumber('--lifetime', values.lifetime),
      env: parseEnv(values.env),
    });
    await current.write(created.id);
    printJson(created);
    return 0;
  }
  if (action === 'list') {
    printJson(await callApi(await target(home), 'GET', '/v1/sessions'));
    return 0;
  }
  if (action === 'info' || action === 'close') {
    const id = rest[0] ?? (await current.read());
    if (!id) {
      throw new HearthError('no_current_session', 'There is no current session; name one.', 2);
    }
    const path = `/v1/sessions/${encodeURIComponent(id)}`;
    if (action === 'info') {
      printJson(await callApi(await target(home), 'GET', path));
      return 0;
    }
    try {
      const closed = (await callApi(await target(home), 'DELETE', path)) as Session;
      process.stdout.write(`closed ${closed.id}\n`);
    } finally {
      if (id === (await current.read())) await current.clear();
    }
    return 0;
  }
  throw new HearthError('invalid_arguments', 'Use: hearth session create|list|info|close.', 2);
}

async function server(home: string, args: string[]): Promise<number> {
  const [action] = args;
  if (action === 'run') {
    const { runHearthd } = await import('../server/main.js');
    await runHearthd();
    return new Promise<number>(() => undefined);
  }
  const { stopLocalDaemon } = await import('./daemon.js');
  const local = { socketPath: `${home}/hearthd.sock` };
  if (action === 'status') {
    const healthy = await isHealthy(local);
    process.stdout.write(
      healthy ? `hearthd is running on ${local.socketPath}\n` : 'hearthd is not running\n',
    );
    return healthy ? 0 : 3;
  }
  if (action === 'stop') {
    process.stdout.write(
      (await stopLocalDaemon(home)) ? 'hearthd stopped\n' : 'hearthd was not running\n',
    );
    return 0;
  }
  throw new HearthError('invalid_arguments', 'Use: hearth server status|stop|run.', 2);
}

async function transfer(home: string, command: string, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { session: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) {
    throw new HearthError('invalid_arguments', `Use: hearth ${command} <from> <to>.`, 2);
  }
  const sessionId = values.session ?? (await new CurrentSession(home).read());
  if (!sessionId) {
    throw new HearthError('no_current_session', 'There is no current session; name one.', 2);
  }
  const { downloadCommand, uploadCommand } = await import('./files.js');
  const [from, to] = positionals as [string, string];
  if (command === 'upload') {
    await stat(from); // a missing local file fails here, before any server is started
    const size = await uploadCommand(await target(home), sessionId, from, to);
    process.stdout.write(`uploaded ${size} bytes to ${to}\n`);
  } else {
    const written = await downloadCommand(await target(home), sessionId, from, to);
    process.stdout.write(`downloaded ${from} to ${written}\n`);
  }
  return 0;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const separator = pair.indexOf('=');
    if (separator <= 0) {
      throw new HearthError('invalid_arguments', `--env expects KEY=VALUE, got "${pair}".`, 2);
    }
    env[pair.slice(0, separator)] = pair.slice(separator + 1);
  }
  return env;
}

function positiveNumber(option: string, value: string): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) {
    throw new HearthError(
      'invalid_arguments',
      `${option} expects a positive number, got "${value}".`,
      2,
    );
  }
  return number;
}

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

const HINTS: Record<string, string> = {
  images_missing: 'run ./setup.sh to build the guest kernel and rootfs',
  server_unreachable: 'check `hearth server status` and the log in $HEARTH_HOME/logs/hearthd.log',
  server_start_failed: 'see $HEARTH_HOME/logs/hearthd.log',
  invalid_arguments: 'run `hearth help` for the options',
  session_busy: 'wait for the running call to finish, or use another session',
  no_current_session: 'name a session id, e.g. from `hearth session list`',
  local_file_error: 'check the local path',
  session_not_found: 'list your sessions with `hearth session list`',
  session_expired: 'start a new session; raise --lifetime for longer ones',
  cwd_not_found: 'create the directory first, or leave out --cwd',
  invalid_path: 'give an absolute path in the VM, without ".." segments',
  file_not_found: 'list the directory with the files API, or check the path',
  unauthorized: 'set HEARTH_API_KEY to a key from `hearth keys create`',
  vm_boot_failed: 'see the boot-failure logs in $HEARTH_HOME/run/logs',
};

/** Errors from the local filesystem, such as an upload of a file that does not exist. */
function isLocalFileError(error: unknown): error is NodeJS.ErrnoException {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return ['ENOENT', 'EACCES', 'EISDIR', 'ENOTDIR', 'EEXIST'].includes(code ?? '');
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof HearthError) {
    process.stderr.write(`hearth: error [${error.code}]: ${error.message}\n`);
    const hint = HINTS[error.code];
    if (hint) process.stderr.write(`hint: ${hint}\n`);
    process.exitCode = error.code === 'invalid_arguments' ? 2 : 1;
  } else if (isLocalFileError(error)) {
    process.stderr.write(
      `hearth: error [local_file_error]: ${error.message}\nhint: ${HINTS.local_file_error}\n`,
    );
    process.exitCode = 1;
  } else if (
    error instanceof TypeError &&
    'code' in error &&
    String(error.code).startsWith('ERR_PARSE_ARGS')
  ) {
    process.stderr.write(
      `hearth: error [invalid_arguments]: ${error.message}\nhint: ${HINTS.invalid_arguments}\n`,
    );
    process.exitCode = 2;
  } else {
    throw error;
  }
}
