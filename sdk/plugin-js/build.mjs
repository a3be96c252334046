#!/usr/bin/env node
// Builds Lotus codec plugin components from JavaScript with componentize-js.
//
//   node build.mjs --script vendor.js --out codec.wasm   a vendor's Alibaba IoT / ChirpStack script,
//                                                        unchanged, inside the adapter
//   node build.mjs --runner --out script-runner.wasm     the generic runner: the adapter without a
//                                                        script, which loads kv key `script`
//   node build.mjs --module codec.js --out codec.wasm    an ES module that itself exports the
//                                                        codec world's `decode` and `encode`
//
// Options: --wit DIR (default: the repository's wit/v0.1.0), --world NAME (default: codec).
// Prints the component's size and the build time.

import { componentize } from '@bytecodealliance/componentize-js';
import { mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));

// Everything but the Lotus host interfaces is left out of the engine, so the component imports
// only `log`, `kv` and `clock`: no filesystem, stdio, sockets, HTTP or random to grant or deny.
// (Without `clocks`, `Date` is given the time through the `clock` capability instead; see
// src/adapter.js.)
const DISABLED_FEATURES = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];

function usage(message) {
  if (message) console.error(`build.mjs: ${message}`);
  console.error(
    'usage: node build.mjs (--script vendor.js | --runner | --module codec.js) --out codec.wasm\n' +
      '                      [--wit DIR] [--world codec]',
  );
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    script: { type: 'string' },
    runner: { type: 'boolean', default: false },
    module: { type: 'string' },
    out: { type: 'string' },
    wit: { type: 'string', default: resolve(here, '../../wit/v0.1.0') },
    world: { type: 'string', default: 'codec' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) usage();
const modes = [values.script !== undefined, values.runner, values.module !== undefined];
if (modes.filter(Boolean).length !== 1) usage('give exactly one of --script, --runner, --module');
if (!values.out) usage('--out is required');

const started = process.hrtime.bigint();
const work = await mkdtemp(join(tmpdir(), 'lotus-plugin-js-'));
try {
  let sourcePath;
  if (values.module) {
    sourcePath = resolve(values.module);
  } else {
    // The adapter imports the script text from `./script-source.js`, generated here next to a
    // copy of it: a string literal for --script, `null` for the runner.
    const script = values.script ? await readFile(values.script, 'utf8') : null;
    await copyFile(join(here, 'src/adapter.js'), join(work, 'adapter.js'));
    await writeFile(
      join(work, 'script-source.js'),
      `export const SCRIPT_SOURCE = ${JSON.stringify(script)};\n`,
    );
    sourcePath = join(work, 'adapter.js');
  }
  const { component } = await componentize({
    sourcePath,
    witPath: resolve(values.wit),
    worldName: values.world,
    disableFeatures: DISABLED_FEATURES,
  });
  await writeFile(values.out, component);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(
    `${values.out}: ${component.length} bytes (${(component.length / 1048576).toFixed(1)} MiB), ` +
      `built in ${(ms / 1000).toFixed(1)} s`,
  );
} catch (e) {
  // componentize-js reports a script that throws while loading (the adapter compiles an embedded
  // script at build time) as a Wizer failure; its message carries the script's error.
  console.error(`build.mjs: ${values.script ?? values.module ?? 'runner'}: ${e.message ?? e}`);
  process.exitCode = 1;
} finally {
  await rm(work, { recursive: true, force: true });
}
