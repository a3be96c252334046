"""Air-quality sensor codec for the Lotus `codec` world, written in Python.

Uplink frame (7 bytes, big-endian, on `/sys/{pk}/{dn}/thing/model/up_raw`):
PM2.5 u16 µg/m³, PM10 u16 µg/m³, temperature i16 in 0.1 °C, humidity u8 % (0..=100).

Downlink (property set of `ReportInterval`, seconds, 10..=86400): 0xA1, then the interval as u32
big-endian.

The same frame as examples/plugins/codec-js, so the two can be checked against each other.
"""

import json
import struct

import wit_world
from componentize_py_types import Err
from wit_world import CodecError
from wit_world.imports import log, types

FRAME = struct.Struct(">HHhB")
CMD_SET_INTERVAL = 0xA1


def _error(message: str, offset: int | None = None, field: str | None = None) -> Err:
    # componentize-py maps a raised `Err(value)` to the `err` case of the WIT result.
    return Err(CodecError(message=message, offset=offset, field=field))


class WitWorld(wit_world.WitWorld):
    def decode(self, topic: str, payload: bytes, context: types.MessageContext) -> str:
        if len(payload) != FRAME.size:
            raise _error(
                f"frame is {len(payload)} bytes, expected {FRAME.size}",
                offset=min(len(payload), FRAME.size),
            )
        pm25, pm10, temp_tenths, humidity = FRAME.unpack(payload)
        if humidity > 100:
            raise _error(f"humidity {humidity} % is over 100", offset=6, field="Humidity")
        return json.dumps(
            {
                # The device sends no message id; the receive time is unique enough per device.
                "id": str(context.at_ms),
                "version": "1.0",
                "method": "thing.event.property.post",
                "params": {
                    "PM25": pm25,
                    "PM10": pm10,
                    "Temperature": temp_tenths / 10,
                    "Humidity": humidity,
                },
            },
            separators=(",", ":"),
        )

    def encode(self, message: str, context: types.MessageContext) -> bytes:
        try:
            msg = json.loads(message)
        except ValueError as e:
            raise _error(f"message is not JSON: {e}")
        if not isinstance(msg, dict) or msg.get("method") != "thing.service.property.set":
            method = msg.get("method") if isinstance(msg, dict) else None
            raise _error(f"method {method} has no downlink frame", field="method")
        interval = (msg.get("params") or {}).get("ReportInterval")
        # bool is an int in Python; `true` is not a number of seconds.
        if type(interval) is not int or not 10 <= interval <= 86400:
            raise _error(
                f"ReportInterval must be an integer of seconds in 10..=86400, got {json.dumps(interval)}",
                field="ReportInterval",
            )
        log.log(log.Level.DEBUG, f"{context.device_name}: reporting interval {interval} s")
        return struct.pack(">BI", CMD_SET_INTERVAL, interval)
