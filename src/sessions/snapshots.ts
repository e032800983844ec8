// Snapshots of a freshly booted VM, one per guest image and VM shape, so that new sessions
// restore in milliseconds instead of booting.
//
// A template VM boots with its RAM in a shared file, reaches its agent, starts the Python
// kernel, syncs its disk, and saves only its device state (QEMU's x-ignore-shared skips the
// RAM, which is already in the file). A restore maps that RAM file copy-on-write, copies the
// template's small sparse scratch disk, and loads the device state: restored VMs share the
// unchanged pages through the host's page cache and never see each other's writes.
//
// With a network service, the template also has a virtio-net device on a TAP of its own
// under a deny-all policy, with eth0 down and no address. The device state is saved, but
// not the TAP behind it. Each restore attaches a new TAP with its session's policy, and the
// greeting gives the guest its new MAC, address and gateway.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { HearthError } from '../errors.js';
import { DENY_ALL, type EgressPolicy, type NetworkService } from '../network/types.js';
import type { QemuDriver } from '../vmm/qemu.js';
import type { QemuVm } from '../vmm/qemu.js';
import { bootVm, copySparse, type BootedVm, type VmImages } from './vm.js';

/** The resources that a snapshot is made for; sessions with other values boot. */
export interface VmShape {
  cpuCount: number;
  memoryMib: number;
  diskMib: number;
}

export interface SnapshotStoreOptions {
  /** Snapshots live in <dir>/<key>/. */
  dir: string;
  driver: QemuDriver;
  images: VmImages & { kernelHash: string; rootfsHash: string };
  /** Also part of the key: a snapshot is valid only for the VMM and accelerator it ran. */
  vmmIdentity: string;
  runRoot: string;
  logDir: string;
  bootTimeoutMs: number;
  logger: Logger;
  /** Gives templates and restored VMs a network device; part of the key. */
  network?: NetworkService;
}

interface SnapshotFiles {
  dir: string;
  ramPath: string;
  statePath: string;
  scratchPath: string;
}

interface SnapshotMeta {
  key: string;
  shape: VmShape;
  createdAt: string;
  stateSha256: string;
  ramBytes: number;
}

// Bump when what a snapshot contains changes, so that old ones are never restored.
// Version 2 added the network device to templates of a hearthd with a network service.
const SNAPSHOT_FORMAT_VERSION = 2;
// A restore reaches its agent in well under a second even under TCG; ten means it hangs.
const RESTORE_TIMEOUT_MS = 10_000;

/** A copy of a snapshot's scratch disk, made for its next restore. */
interface SpareScratch {
  /** The snapshot it was copied from, by the checksum of its device state. */
  stateSha256: string;
  /** Resolves to the copy's path, or to null when the copy failed. */
  path: Promise<string | null>;
}

export class SnapshotStore {
  private readonly building = new Map<string, Promise<boolean>>();
  // Copying a scratch disk spawns cp, about 5 ms, so each restore leaves a copy ready for
  // the next one. Copies live in the snapshot's directory and go when it is deleted.
  private readonly spares = new Map<string, SpareScratch>();
  private closed = false;
  private readonly root: string;

  constructor(private readonly options: SnapshotStoreOptions) {
    this.root = options.dir;
  }

  key(shape: VmShape): string {
    const { images, vmmIdentity } = this.options;
    return createHash('sha256')
      .update(
        JSON.stringify([
          SNAPSHOT_FORMAT_VERSION,
          images.kernelHash,
          images.rootfsHash,
          vmmIdentity,
          this.options.network !== undefined,
          shape.cpuCount,
          shape.memoryMib,
          shape.diskMib,
        ]),
      )
      .digest('hex')
      .slice(0, 16);
  }

  /** Waits for snapshot builds in progress, whose template VMs must not outlive hearthd,
   * and starts no more. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.building.values()]);
    const spares = [...this.spares.values()];
    this.spares.clear();
    for (const spare of spares) {
      const path = await spare.path;
      if (path) await rm(path, { force: true });
    }
  }

  /** Returns whether a complete snapshot for the shape exists. */
  async has(shape: VmShape): Promise<boolean> {
    return (await this.readMeta(this.files(this.key(shape)))) !== null;
  }

  /**
   * Makes the snapshot for a shape unless it exists. Concurrent calls share one build.
   * Returns false, after logging why, when the build failed.
   */
  ensure(shape: VmShape): Promise<boolean> {
    const key = this.key(shape);
    let build = this.building.get(key);
    if (!build && this.closed) return Promise.resolve(false);
    if (!build) {
      build = this.build(key, shape).finally(() => this.building.delete(key));
      this.building.set(key, build);
    }
    return build;
  }

  /**
   * Starts a VM from the shape's snapshot and greets its agent with the session's env and,
   * with a network service, the network settings of a new TAP under `egress`.
   * A snapshot that fails to restore is deleted, so that the next ensure() rebuilds it.
   * A failure to attach the network (no free address, say) keeps the snapshot, because
   * the snapshot is not at fault.
   */
  async restore(
    shape: VmShape,
    env: Record<string, string>,
    egress: EgressPolicy = DENY_ALL,
  ): Promise<BootedVm> {
    const key = this.key(shape);
    const files = this.files(key);
    const meta = await this.readMeta(files);
    if (!meta) throw new HearthError('snapshot_missing', `No snapshot ${key} to restore.`);
    const { network } = this.options;
    let attachFailed = false;
    const attachNetwork = network
      ? (vmId: string) =>
          network.attach(vmId, egress).catch((error: unknown) => {
            attachFailed = true;
            throw error;
          })
      : undefined;
    const spare = this.spares.get(key);
    this.spares.delete(key);
    const scratchCopy =
      spare?.stateSha256 === meta.stateSha256 ? ((await spare.path) ?? undefined) : undefined;
    try {
      const booted = await bootVm(this.options.driver, this.options.images, {
        ...shape,
        env,
        runRoot: this.options.runRoot,
        logDir: this.options.logDir,
        bootTimeoutMs: RESTORE_TIMEOUT_MS,
        attachNetwork,
        snapshot: {
          memoryFile: { path: files.ramPath, shared: false },
          statePath: files.statePath,
          scratchTemplate: files.scratchPath,
          scratchCopy,
        },
      });
      this.prepareSpare(key, files, meta);
      return booted;
    } catch (error) {
      if (attachFailed) throw error;
      this.options.logger.warn(
        { snapshot: key, err: (error as Error).message },
        'snapshot failed to restore; deleting it so it is rebuilt',
      );
      await rm(files.dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Starts copying the snapshot's scratch disk for its next restore, unless one is ready. */
  private prepareSpare(key: string, files: SnapshotFiles, meta: SnapshotMeta): void {
    if (this.closed || this.spares.has(key)) return;
    const path = join(files.dir, `spare-${process.pid}-${randomBytes(4).toString('hex')}.ext4`);
    this.spares.set(key, {
      stateSha256: meta.stateSha256,
      path: copySparse(files.scratchPath, path).then(
        () => path,
        () => null,
      ),
    });
  }

  /** Deletes snapshots of other guest images or VMMs, and builds that a crash left. */
  async removeStale(): Promise<void> {
    let entries: string[] = [];
    try {
      entries = await readdir(this.root);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.startsWith('.build-')) {
        // Another hearthd sharing the directory may be building this one right now.
        if (await isRunning(join(this.root, entry, 'owner.pid'))) continue;
        await rm(join(this.root, entry), { recursive: true, force: true });
        continue;
      }
      const meta = await this.readMeta(this.files(entry));
      if (!meta || this.key(meta.shape) !== entry) {
        await rm(join(this.root, entry), { recursive: true, force: true });
        continue;
      }
      await removeOrphanSpares(join(this.root, entry));
    }
  }

  private files(key: string): SnapshotFiles {
    const dir = join(this.root, key);
    return {
      dir,
      ramPath: join(dir, 'ram'),
      statePath: join(dir, 'state'),
      scratchPath: join(dir, 'scratch.ext4'),
    };
  }

  /** Reads a snapshot's metadata, and returns null unless every file matches it. */
  private async readMeta(files: SnapshotFiles): Promise<SnapshotMeta | null> {
    try {
      const meta = JSON.parse(await readFile(join(files.dir, 'meta.json'), 'utf8')) as SnapshotMeta;
      const state = await readFile(files.statePath);
      const ram = await stat(files.ramPath);
      await stat(files.scratchPath);
      if (createHash('sha256').update(state).digest('hex') !== meta.stateSha256) return null;
      if (ram.size !== meta.ramBytes) return null;
      return meta;
    } catch {
      return null;
    }
  }

  private async build(key: string, shape: VmShape): Promise<boolean> {
    const final = this.files(key);
    if (await this.readMeta(final)) return true;
    const startedAt = performance.now();
    const dir = join(this.root, `.build-${key}-${randomBytes(4).toString('hex')}`);
    const files = { ...this.files(key), dir };
    files.ramPath = join(dir, 'ram');
    files.statePath = join(dir, 'state');
    files.scratchPath = join(dir, 'scratch.ext4');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'owner.pid'), String(process.pid));
    let template: BootedVm | null = null;
    try {
      const { network } = this.options;
      template = await bootVm(this.options.driver, this.options.images, {
        ...shape,
        env: {},
        runRoot: this.options.runRoot,
        logDir: this.options.logDir,
        bootTimeoutMs: this.options.bootTimeoutMs,
        attachNetwork: network ? (vmId) => network.attach(vmId, DENY_ALL) : undefined,
        snapshot: {
          memoryFile: { path: files.ramPath, shared: true },
          scratchPath: files.scratchPath,
        },
      });
      // Wait for the Python kernel and write everything cached to the scratch disk, whose
      // copy every restore starts from.
      const warmUp = { timeout_seconds: 60, env: {}, cwd: null, output_limit_bytes: 4096 };
      await template.agent.execute({ ...warmUp, code: 'pass', language: 'python' });
      await template.agent.execute({ ...warmUp, code: 'sync', language: 'bash' });
      await (template.vm as QemuVm).saveState(files.statePath);
      await template.destroy();
      template = null;

      const meta: SnapshotMeta = {
        key,
        shape,
        createdAt: new Date().toISOString(),
        stateSha256: createHash('sha256')
          .update(await readFile(files.statePath))
          .digest('hex'),
        ramBytes: (await stat(files.ramPath)).size,
      };
      await writeFile(join(dir, 'meta.json'), JSON.stringify(meta, null, 2));
      await rm(final.dir, { recursive: true, force: true });
      await rename(dir, final.dir);
      this.options.logger.info(
        { snapshot: key, shape, durationMs: Math.round(performance.now() - startedAt) },
        'snapshot created',
      );
      return true;
    } catch (error) {
      this.options.logger.warn({ snapshot: key, err: (error as Error).message }, 'snapshot failed');
      await template?.destroy();
      await rm(dir, { recursive: true, force: true });
      return false;
    }
  }
}

/** Deletes spare scratch copies whose hearthd, named in the file name, no longer runs. */
async function removeOrphanSpares(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const pid = /^spare-(\d+)-[0-9a-f]+\.ext4$/.exec(name)?.[1];
    if (pid === undefined || processRuns(Number(pid))) continue;
    await rm(join(dir, name), { force: true });
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Returns whether the process in a pid file still runs, other than this one. */
async function isRunning(pidPath: string): Promise<boolean> {
  const pid = Number.parseInt(await readFile(pidPath, 'utf8').catch(() => ''), 10);
  return Number.isInteger(pid) && pid !== process.pid && processRuns(pid);
}
