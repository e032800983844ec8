/** A session's egress policy, as the API accepts it. Deny-all when every list is empty. */
export interface EgressPolicy {
  allowDomains: string[];
  allowCidrs: string[];
  allowPackageManagers: boolean;
}

/** A policy that allows nothing, with every list empty. */
export const DENY_ALL: EgressPolicy = {
  allowDomains: [],
  allowCidrs: [],
  allowPackageManagers: false,
};

/** What a VMM driver needs to give a VM its network device. */
export interface VmNetworkDevice {
  /** Host TAP device the VM's virtio-net device is attached to. */
  tapDevice: string;
  macAddress: string;
  /** Kernel command-line arguments that tell the guest its address, gateway and resolver. */
  kernelArgs: string[];
}

/**
 * eth0's settings as the guest agent applies them from the greeting. A VM restored from a
 * snapshot gets them this way, because it kept the template's kernel command line.
 */
export interface GuestNetworkSettings {
  address: string;
  prefix: number;
  /** The host's end of the TAP, which is the default route and the DNS resolver. */
  gateway: string;
  macAddress: string;
  /** The package-managers preset's guest files, present only when the policy allows it. */
  packageFiles: { pip?: string; npm?: string; apt?: string };
}

/** A VM's network on the host: its TAP, addresses and egress rules. */
export interface VmNetwork {
  device: VmNetworkDevice;
  /** The policy in effect, for the session's info. setPolicy() replaces it. */
  policy: EgressPolicy;
  /** Settings for the guest's greeting. setPolicy() replaces their package files. */
  guest: GuestNetworkSettings;
  /**
   * Replaces the policy, for a warm pool VM that waited under deny-all and is handed to a
   * session. Pins and allowed ranges change in one nft transaction. Connections that are
   * already established are not cut, so call it before the guest has made any.
   */
  setPolicy(policy: EgressPolicy): Promise<void>;
  /** Removes the TAP, rules and DNS pins. Idempotent. */
  detach(): Promise<void>;
  /** Connection attempts the policy refused so far (see NetworkService.deniedConnections). */
  deniedConnections(): Promise<number>;
}

/** Gives VMs their network. hearthd runs without one when egress is disabled. */
export interface NetworkService {
  attach(vmId: string, policy: EgressPolicy): Promise<VmNetwork>;
  /** Throws invalid_egress_policy (HTTP 400), naming the first entry it cannot enforce. */
  validatePolicy(policy: EgressPolicy): void;
  /** Removes devices and rules left by an earlier hearthd that are not in use. */
  reconcile(): Promise<void>;
  /** Removes everything this service created. */
  close(): Promise<void>;
  /** Connection attempts of a VM that its policy refused; 0 for an unknown VM. */
  deniedConnections(vmId: string): Promise<number>;
}
