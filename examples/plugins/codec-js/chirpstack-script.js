// Air-quality sensor codec in ChirpStack v4's form (the same form The Things Stack uses), as a
// vendor would have written it for a LoRaWAN network server. Lotus runs it unchanged through
// sdk/plugin-js; its `data` becomes the properties of a `thing.event.property.post`.
//
// Uplink (7 bytes, big-endian): PM2.5 u16 µg/m³, PM10 u16 µg/m³, temperature i16 in 0.1 °C,
// humidity u8 %.
// Downlink: 0xA1 followed by the reporting interval in seconds as u32 ({"ReportInterval": s}).

function decodeUplink(input) {
  var b = input.bytes;
  if (b.length !== 7) {
    return { errors: ['expected 7 bytes, got ' + b.length] };
  }
  var temperature = (b[4] << 8) | b[5];
  if (temperature & 0x8000) temperature -= 0x10000;
  var warnings = [];
  if (b[6] > 100) warnings.push('humidity over 100 %');
  return {
    data: {
      PM25: (b[0] << 8) | b[1],
      PM10: (b[2] << 8) | b[3],
      Temperature: temperature / 10,
      Humidity: b[6],
    },
    warnings: warnings,
  };
}

function encodeDownlink(input) {
  var s = input.data.ReportInterval;
  if (typeof s !== 'number' || s < 10 || s > 86400) {
    return { errors: ['ReportInterval must be 10..86400 seconds'] };
  }
  return {
    fPort: 10,
    bytes: [0xa1, (s >>> 24) & 0xff, (s >>> 16) & 0xff, (s >>> 8) & 0xff, s & 0xff],
  };
}
