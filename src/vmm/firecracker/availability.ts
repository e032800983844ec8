import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';

export interface Availability {
  usable: boolean;
  /** Explanation of the verdict: what is missing, or which binary the driver will use. */
  reason: string;
}

/**
 * Returns the absolute path of an executable file: `command` itself when it contains a slash,
 * otherwise the first match on PATH. Returns null when there is none.
 */
export async function findExecutable(
  command: string,
  searchPath = process.env.PATH ?? '',
): Promise<string | null> {
  const candidates = command.includes('/')
    ? [resolve(command)]
    : searchPath
        .split(delimiter)
        .filter((directory) => isAbsolute(directory))
        .map((directory) => join(directory, command));

  for (const candidate of candidates) {
    try {
      const info = await stat(candidate);
      if (!info.isFile()) continue;
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Missing or not executable: try the next directory.
    }
  }
  return null;
}

export interface FirecrackerAvailabilityOptions {
  /**
   * Checks that KVM can boot a real guest. /dev/kvm existing is not enough: a paravirtual
   * KVM may be present and still fail to boot a stock kernel.
   */
  kvmUsable: () => Promise<Availability>;
  /** The firecracker binary's name or path. Default `firecracker`. */
  firecrackerPath?: string;
  /** The PATH to search. Default process.env.PATH. */
  searchPath?: string;
}

/**
 * Reports whether the Firecracker driver can boot VMs here: it needs a firecracker binary and
 * a KVM that boots guests. The KVM probe runs only when the binary exists, because it is slow.
 */
export async function firecrackerAvailability(
  options: FirecrackerAvailabilityOptions,
): Promise<Availability> {
  const command = options.firecrackerPath ?? 'firecracker';
  const binary = await findExecutable(command, options.searchPath);
  if (!binary) {
    const reason = command.includes('/')
      ? `${command} is missing or not executable`
      : `no ${command} binary on PATH`;
    return { usable: false, reason };
  }

  const kvm = await options.kvmUsable();
  if (!kvm.usable) {
    return { usable: false, reason: `KVM cannot boot a guest here: ${kvm.reason}` };
  }
  return { usable: true, reason: `${binary} with KVM` };
}
