/**
 * Air-quality sensor data-parsing script in Alibaba Cloud IoT's form, as a vendor would have
 * written it for that platform: ES5, global functions, Java-style byte arrays. Lotus runs it
 * unchanged through sdk/plugin-js.
 *
 * Uplink (7 bytes, big-endian): PM2.5 u16 µg/m³, PM10 u16 µg/m³, temperature i16 in 0.1 °C,
 * humidity u8 %.
 * Downlink: 0xA1 followed by the reporting interval in seconds as u32 (property ReportInterval).
 */
var COMMAND_SET_INTERVAL = 0xa1;
var ALINK_PROP_REPORT_METHOD = 'thing.event.property.post';
var ALINK_PROP_SET_METHOD = 'thing.service.property.set';

/**
 * Device → cloud: raw bytes to Alink JSON.
 * @param bytes array of byte values
 */
function rawDataToProtocol(bytes) {
    if (bytes.length != 7) {
        throw new Error('frame length ' + bytes.length + ', expected 7');
    }
    var uint8Array = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) {
        uint8Array[i] = bytes[i] & 0xff;
    }
    var dataView = new DataView(uint8Array.buffer, 0);
    var params = {};
    params['PM25'] = dataView.getUint16(0);
    params['PM10'] = dataView.getUint16(2);
    params['Temperature'] = dataView.getInt16(4) / 10;
    params['Humidity'] = dataView.getUint8(6);
    var jsonMap = {};
    jsonMap['method'] = ALINK_PROP_REPORT_METHOD;
    jsonMap['version'] = '1.0';
    jsonMap['id'] = '' + new Date().getTime();
    jsonMap['params'] = params;
    return jsonMap;
}

/**
 * Cloud → device: Alink JSON to raw bytes.
 * @param json Alink JSON object
 */
function protocolToRawData(json) {
    var method = json['method'];
    var params = json['params'];
    if (method != ALINK_PROP_SET_METHOD || params['ReportInterval'] === undefined) {
        throw new Error('unsupported downlink: ' + method);
    }
    var payloadArray = [COMMAND_SET_INTERVAL];
    payloadArray = payloadArray.concat(buffer_uint32(params['ReportInterval']));
    return payloadArray;
}

/** A u32 as four big-endian byte values. */
function buffer_uint32(value) {
    var uint8Array = new Uint8Array(4);
    var dv = new DataView(uint8Array.buffer, 0);
    dv.setUint32(0, value);
    return [].slice.call(uint8Array);
}
