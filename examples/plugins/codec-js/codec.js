// Air-quality sensor codec for the Lotus `codec` world, written directly in JavaScript.
//
// Uplink frame (7 bytes, big-endian, on `/sys/{pk}/{dn}/thing/model/up_raw`):
//   0..2  PM2.5 in µg/m³, u16
//   2..4  PM10 in µg/m³, u16
//   4..6  temperature in 0.1 °C, i16 (so -40.5 °C is -405)
//   6     relative humidity in %, u8 (0..=100)
//
// Downlink (property set of `ReportInterval`, seconds, 10..=86400):
//   0     0xA1 (command: set reporting interval)
//   1..5  interval in seconds, u32 big-endian
//
// The world's exports are the module's exports `decode` and `encode`; a failed call throws a
// `ComponentError` whose payload becomes the WIT `codec-error` (message, offset, field).

import { log } from 'lotus:plugin/log@0.1.0';

const FRAME_LEN = 7;
const CMD_SET_INTERVAL = 0xa1;

// componentize-js maps a thrown object with a `payload` to the `err` case of a `result`.
class CodecError extends Error {
  constructor(message, offset, field) {
    super(message);
    this.payload = { message, offset, field };
  }
}

export function decode(topic, payload, context) {
  if (payload.length !== FRAME_LEN) {
    throw new CodecError(
      `frame is ${payload.length} bytes, expected ${FRAME_LEN}`,
      Math.min(payload.length, FRAME_LEN),
      undefined,
    );
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const humidity = view.getUint8(6);
  if (humidity > 100) {
    throw new CodecError(`humidity ${humidity} % is over 100`, 6, 'Humidity');
  }
  const params = {
    PM25: view.getUint16(0),
    PM10: view.getUint16(2),
    // Divide rather than multiply by 0.1: 217 * 0.1 is 21.700000000000003, 217 / 10 is 21.7.
    Temperature: view.getInt16(4) / 10,
    Humidity: humidity,
  };
  return JSON.stringify({
    // The device sends no message id; the receive time is unique enough per device.
    id: String(context.atMs),
    version: '1.0',
    method: 'thing.event.property.post',
    params,
  });
}

export function encode(message, context) {
  let msg;
  try {
    msg = JSON.parse(message);
  } catch (e) {
    throw new CodecError(`message is not JSON: ${e.message}`);
  }
  if (msg.method !== 'thing.service.property.set') {
    throw new CodecError(`method ${msg.method} has no downlink frame`, undefined, 'method');
  }
  const interval = msg.params?.ReportInterval;
  if (!Number.isInteger(interval) || interval < 10 || interval > 86400) {
    throw new CodecError(
      `ReportInterval must be an integer of seconds in 10..=86400, got ${JSON.stringify(interval)}`,
      undefined,
      'ReportInterval',
    );
  }
  const out = new Uint8Array(5);
  out[0] = CMD_SET_INTERVAL;
  new DataView(out.buffer).setUint32(1, interval);
  log('debug', `${context.deviceName}: reporting interval ${interval} s`);
  return out;
}
