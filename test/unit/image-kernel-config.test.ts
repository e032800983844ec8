import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatConfigMismatches,
  parseKernelConfig,
  verifyKernelConfig,
} from '../../src/image/kernel-config.js';

describe('parseKernelConfig', () => {
  it('reads values as written, quotes included', () => {
    const options = parseKernelConfig(
      'CONFIG_BLOCK=y\nCONFIG_NR_CPUS=16\nCONFIG_LOCALVERSION="-hearth"\n',
    );
    assert.equal(options.get('CONFIG_BLOCK'), 'y');
    assert.equal(options.get('CONFIG_NR_CPUS'), '16');
    assert.equal(options.get('CONFIG_LOCALVERSION'), '"-hearth"');
  });

  it('maps "is not set" to n and ignores other comments', () => {
    const options = parseKernelConfig(
      '#\n# Automatically generated file\n# CONFIG_VT is not set\n# Block devices\n',
    );
    assert.equal(options.get('CONFIG_VT'), 'n');
    assert.equal(options.size, 1);
  });
});

describe('verifyKernelConfig', () => {
  const fragment = [
    '# hearth fragment',
    'CONFIG_BLOCK=y',
    'CONFIG_EXT4_FS=y',
    'CONFIG_NR_CPUS=16',
    'CONFIG_LOCALVERSION="-hearth"',
    'CONFIG_VT=n',
    'CONFIG_LEGACY_PTYS=n',
    '# CONFIG_MODULES is not set',
  ].join('\n');

  it('accepts a config with every option present', () => {
    const final = [
      'CONFIG_BLOCK=y',
      'CONFIG_EXT4_FS=y',
      'CONFIG_NR_CPUS=16',
      'CONFIG_LOCALVERSION="-hearth"',
      '# CONFIG_VT is not set',
      '# CONFIG_MODULES is not set',
    ].join('\n');
    assert.deepEqual(verifyKernelConfig(fragment, final), []);
  });

  it('reports an option that is missing', () => {
    const final = 'CONFIG_BLOCK=y\nCONFIG_NR_CPUS=16\nCONFIG_LOCALVERSION="-hearth"\n';
    assert.deepEqual(verifyKernelConfig(fragment, final), [
      { option: 'CONFIG_EXT4_FS', expected: 'y', actual: undefined },
    ]);
  });

  it('reports an option that is not set', () => {
    const final =
      'CONFIG_BLOCK=y\n# CONFIG_EXT4_FS is not set\nCONFIG_NR_CPUS=16\nCONFIG_LOCALVERSION="-hearth"';
    assert.deepEqual(verifyKernelConfig(fragment, final), [
      { option: 'CONFIG_EXT4_FS', expected: 'y', actual: 'n' },
    ]);
  });

  it('treats =n as satisfied by absence or is not set', () => {
    const final =
      'CONFIG_BLOCK=y\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=16\nCONFIG_LOCALVERSION="-hearth"\n';
    assert.deepEqual(verifyKernelConfig(fragment, final), []);
  });

  it('reports an =n option that is enabled', () => {
    const final = [
      'CONFIG_BLOCK=y',
      'CONFIG_EXT4_FS=y',
      'CONFIG_NR_CPUS=16',
      'CONFIG_LOCALVERSION="-hearth"',
      'CONFIG_VT=y',
      'CONFIG_MODULES=y',
    ].join('\n');
    assert.deepEqual(verifyKernelConfig(fragment, final), [
      { option: 'CONFIG_VT', expected: 'n', actual: 'y' },
      { option: 'CONFIG_MODULES', expected: 'n', actual: 'y' },
    ]);
  });

  it('compares string and number values exactly', () => {
    const final = [
      'CONFIG_BLOCK=y',
      'CONFIG_EXT4_FS=y',
      'CONFIG_NR_CPUS=8',
      'CONFIG_LOCALVERSION=""',
    ].join('\n');
    assert.deepEqual(verifyKernelConfig(fragment, final), [
      { option: 'CONFIG_NR_CPUS', expected: '16', actual: '8' },
      { option: 'CONFIG_LOCALVERSION', expected: '"-hearth"', actual: '""' },
    ]);
  });

  it('distinguishes y from m', () => {
    const mismatches = verifyKernelConfig('CONFIG_EXT4_FS=y', 'CONFIG_EXT4_FS=m');
    assert.deepEqual(mismatches, [{ option: 'CONFIG_EXT4_FS', expected: 'y', actual: 'm' }]);
  });
});

describe('formatConfigMismatches', () => {
  it('says how each option ended up', () => {
    const text = formatConfigMismatches([
      { option: 'CONFIG_EXT4_FS', expected: 'y', actual: undefined },
      { option: 'CONFIG_VIRTIO_BLK', expected: 'y', actual: 'n' },
      { option: 'CONFIG_NR_CPUS', expected: '16', actual: '8' },
    ]);
    assert.equal(
      text,
      [
        'CONFIG_EXT4_FS=y (final .config: absent)',
        'CONFIG_VIRTIO_BLK=y (final .config: is not set)',
        'CONFIG_NR_CPUS=16 (final .config: =8)',
      ].join('\n'),
    );
  });
});
