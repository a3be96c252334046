// Implements the Lotus `codec` world (lotus:plugin@0.1.0) by calling a device vendor's existing
// data-parsing script, unchanged:
//
// - Alibaba IoT style: `rawDataToProtocol(bytes)` → Alink JSON object, `protocolToRawData(json)`
//   → array of byte values, and optionally `transformPayload(topic, bytes)` for custom topics.
// - ChirpStack v4 / The Things Stack style: `decodeUplink({bytes, fPort, variables})` →
//   `{data, warnings, errors}`, `encodeDownlink({data, variables})` → `{bytes, fPort, ...}`.
// - ChirpStack v3 style: `Decode(fPort, bytes, variables)` → object, `Encode(fPort, obj, variables)`
//   → array of byte values.
//
// The script's text comes from `./script-source.js`: either embedded at build time (one component
// per script) or `null`, in which case this is the generic *runner* and the script is read from
// the plugin's kv key `script` on first use. Both paths compile the script the same way, with
// `new Function`, so a script behaves identically in either.

import { log } from 'lotus:plugin/log@0.1.0';
import { get as kvGet } from 'lotus:plugin/kv@0.1.0';
import { nowMs } from 'lotus:plugin/clock@0.1.0';
import { SCRIPT_SOURCE } from './script-source.js';

// Vendor scripts are classic scripts that declare global functions. Compiling the text as the
// body of a function keeps their declarations in a private scope and lets us pick the ones we
// know by name without the script having to export anything.
const ENTRY_POINTS = [
  'rawDataToProtocol',
  'protocolToRawData',
  'transformPayload',
  'decodeUplink',
  'encodeDownlink',
  'Decode',
  'Encode',
];

// componentize-js turns a thrown object that has a `payload` into the `err` case of a WIT
// `result`, so this becomes `codec-error { message, offset, field }` on the host.
class CodecError extends Error {
  constructor(message, field) {
    super(message);
    this.payload = { message, offset: undefined, field };
  }
}

function describe(e) {
  if (e instanceof Error) return e.message;
  try {
    return typeof e === 'string' ? e : JSON.stringify(e);
  } catch {
    return String(e);
  }
}

// The engine is built without WASI clocks, and its `Date` would tell the time the component was
// built (the moment of its snapshot). Scripts stamp messages with `new Date()`, so the script's
// own scope gets a `Date` that asks the host's `clock` for "now" and is otherwise the real one.
const RealDate = Date;
function LotusDate(...args) {
  if (!new.target) return new RealDate(Number(nowMs())).toString();
  return args.length === 0 ? new RealDate(Number(nowMs())) : new RealDate(...args);
}
LotusDate.prototype = RealDate.prototype;
LotusDate.now = () => Number(nowMs());
LotusDate.parse = RealDate.parse;
LotusDate.UTC = RealDate.UTC;

function compileScript(source) {
  const pick = ENTRY_POINTS.map(
    (name) => `${JSON.stringify(name)}: typeof ${name} === 'function' ? ${name} : undefined`,
  ).join(',\n');
  let factory;
  try {
    // The newline before `}` ends a trailing `//` comment in the script.
    factory = new Function('Date', `${source}\n;return {\n${pick}\n};`);
  } catch (e) {
    throw new CodecError(`script does not compile: ${describe(e)}`);
  }
  let fns;
  try {
    fns = factory(LotusDate);
  } catch (e) {
    throw new CodecError(`script failed while loading: ${describe(e)}`);
  }
  return bindScript(fns);
}

function bindScript(fns) {
  if (fns.rawDataToProtocol || fns.protocolToRawData || fns.transformPayload) {
    return { style: 'alibaba', fns };
  }
  if (fns.decodeUplink || fns.encodeDownlink) {
    return { style: 'chirpstack', fns };
  }
  if (fns.Decode || fns.Encode) {
    return { style: 'chirpstack-v3', fns };
  }
  throw new CodecError(
    'script defines none of rawDataToProtocol/protocolToRawData/transformPayload ' +
      '(Alibaba IoT), decodeUplink/encodeDownlink (ChirpStack v4) or Decode/Encode (ChirpStack v3)',
  );
}

// Built per script: compiled here, at build time, so a broken script fails the build and the
// compiled functions are part of the component's snapshot. Runner: compiled on first call.
let script = SCRIPT_SOURCE === null ? null : compileScript(SCRIPT_SOURCE);

function loadScript() {
  if (script !== null) return script;
  let bytes;
  try {
    bytes = kvGet('script');
  } catch (e) {
    throw new CodecError(`cannot read the script from kv key "script": ${describe(e)}`);
  }
  if (bytes === undefined || bytes === null) {
    throw new CodecError('no script: set kv key "script" to the vendor script (UTF-8 text)');
  }
  // Cached for the life of this instance; a changed script takes effect in new instances.
  script = compileScript(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  return script;
}

// Alibaba runs scripts on a JVM and passes Java `byte[]` (-128..127); scripts written for it mask
// with `& 0xff`, which is a no-op on the 0..255 values passed here, so both kinds work.
function toByteArray(payload) {
  return Array.from(payload);
}

function fromByteArray(value, what) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength).slice();
  }
  if (!Array.isArray(value)) {
    throw new CodecError(`${what} returned ${describe(value)}, expected an array of byte values`);
  }
  const out = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) {
    const b = value[i];
    // Java-style signed bytes (-128..-1) wrap to 128..255, as they would on Alibaba.
    if (!Number.isInteger(b) || b < -128 || b > 255) {
      throw new CodecError(`${what} returned ${describe(b)} at index ${i}, expected a byte value`);
    }
    out[i] = b & 0xff;
  }
  return out;
}

function call(name, fn, args) {
  try {
    return fn(...args);
  } catch (e) {
    if (e instanceof CodecError) throw e;
    throw new CodecError(`${name}: ${describe(e)}`);
  }
}

// Fills in what an Alink request needs and the script may have left out.
function alinkRequest(value, what, context) {
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (e) {
      throw new CodecError(`${what} returned a string that is not JSON: ${describe(e)}`);
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CodecError(`${what} returned ${describe(value)}, expected an Alink JSON object`);
  }
  if (typeof value.method !== 'string') {
    throw new CodecError(`${what} returned no "method"`, 'method');
  }
  const out = { ...value };
  // Devices without message ids: the receive time is unique per device in practice.
  out.id = value.id === undefined || value.id === null ? String(context.atMs) : String(value.id);
  out.version = value.version ?? '1.0';
  return JSON.stringify(out);
}

function propertyPost(params, context) {
  return JSON.stringify({
    id: String(context.atMs),
    version: '1.0',
    method: 'thing.event.property.post',
    params,
  });
}

// LoRaWAN frames carry an application port that Alink topics do not. A custom topic ending in a
// number (`/{pk}/{dn}/user/up/10`) supplies it; otherwise 1, the first application port, which
// codecs for single-frame devices ignore.
function fPortOf(topic) {
  const last = topic.slice(topic.lastIndexOf('/') + 1);
  return /^[0-9]{1,3}$/.test(last) && Number(last) >= 1 && Number(last) <= 255 ? Number(last) : 1;
}

function chirpstackResult(out, what) {
  if (out === null || typeof out !== 'object') {
    throw new CodecError(`${what} returned ${describe(out)}, expected an object`);
  }
  for (const w of out.warnings ?? []) log('warn', `${what}: ${describe(w)}`);
  if (Array.isArray(out.errors) && out.errors.length > 0) {
    throw new CodecError(`${what}: ${out.errors.map(describe).join('; ')}`);
  }
  return out;
}

function isRawTopic(topic) {
  return topic.endsWith('/thing/model/up_raw');
}

export function decode(topic, payload, context) {
  const { style, fns } = loadScript();
  const bytes = toByteArray(payload);
  if (style === 'alibaba') {
    if (!isRawTopic(topic) && fns.transformPayload) {
      const out = call('transformPayload', fns.transformPayload, [topic, bytes]);
      // On Alibaba a custom topic's result goes to the rules engine as any JSON; on Lotus it
      // must become device data, so anything that is not already an Alink request is taken as
      // the properties it reports.
      if (out !== null && typeof out === 'object' && typeof out.method === 'string') {
        return alinkRequest(out, 'transformPayload', context);
      }
      if (out === null || typeof out !== 'object' || Array.isArray(out)) {
        throw new CodecError(`transformPayload returned ${describe(out)}, expected an object`);
      }
      return propertyPost(out, context);
    }
    if (!fns.rawDataToProtocol) {
      throw new CodecError('script has no rawDataToProtocol(bytes) to decode uplinks');
    }
    const out = call('rawDataToProtocol', fns.rawDataToProtocol, [bytes]);
    return alinkRequest(out, 'rawDataToProtocol', context);
  }
  const fPort = fPortOf(topic);
  if (style === 'chirpstack') {
    if (!fns.decodeUplink) throw new CodecError('script has no decodeUplink(input)');
    const input = { bytes, fPort, variables: {}, recvTime: new Date(Number(context.atMs)) };
    const out = chirpstackResult(call('decodeUplink', fns.decodeUplink, [input]), 'decodeUplink');
    if (out.data === null || typeof out.data !== 'object' || Array.isArray(out.data)) {
      throw new CodecError(`decodeUplink returned data ${describe(out.data)}, expected an object`);
    }
    return propertyPost(out.data, context);
  }
  if (!fns.Decode) throw new CodecError('script has no Decode(fPort, bytes, variables)');
  const data = call('Decode', fns.Decode, [fPort, bytes, {}]);
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new CodecError(`Decode returned ${describe(data)}, expected an object`);
  }
  return propertyPost(data, context);
}

export function encode(message, context) {
  const { style, fns } = loadScript();
  let msg;
  try {
    msg = JSON.parse(message);
  } catch (e) {
    throw new CodecError(`message is not JSON: ${describe(e)}`);
  }
  if (style === 'alibaba') {
    if (!fns.protocolToRawData) {
      throw new CodecError('script has no protocolToRawData(json) to encode downlinks');
    }
    const out = call('protocolToRawData', fns.protocolToRawData, [msg]);
    return fromByteArray(out, 'protocolToRawData');
  }
  // ChirpStack scripts see only the data to send: for a property set or service call, the Alink
  // params. `method` is extra, for scripts that serve more than one Alink method.
  const data = msg.params ?? msg.data ?? {};
  if (style === 'chirpstack') {
    if (!fns.encodeDownlink) throw new CodecError('script has no encodeDownlink(input)');
    const input = { data, variables: {}, method: msg.method };
    const out = chirpstackResult(call('encodeDownlink', fns.encodeDownlink, [input]), 'encodeDownlink');
    // `out.fPort` has no place on `…/thing/model/down_raw`, whose payload is the bytes alone.
    return fromByteArray(out.bytes, 'encodeDownlink');
  }
  if (!fns.Encode) throw new CodecError('script has no Encode(fPort, obj, variables)');
  return fromByteArray(call('Encode', fns.Encode, [1, data, {}]), 'Encode');
}
