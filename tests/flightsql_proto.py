"""Just enough protobuf to speak Flight SQL with the raw `pyarrow.flight` client, which knows
Flight but not the Flight SQL commands (FlightSql.proto): commands are a `google.protobuf.Any`
holding the command message, written by hand here (field numbers from FlightSql.proto).
"""
from __future__ import annotations

import pyarrow.flight as flight

_SQL = "type.googleapis.com/arrow.flight.protocol.sql."


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number: int, data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def any_of(message: str, body: bytes) -> bytes:
    return field_bytes(1, _SQL + message) + field_bytes(2, body)


def command(message: str, body: bytes = b"") -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(any_of(message, body))


def statement_query(sql: str) -> flight.FlightDescriptor:
    return command("CommandStatementQuery", field_bytes(1, sql))


def table_ref(table: str, db_schema: str | None = None, catalog: str | None = None) -> bytes:
    body = b""
    if catalog is not None:
        body += field_bytes(1, catalog)
    if db_schema is not None:
        body += field_bytes(2, db_schema)
    return body + field_bytes(3, table)


def get_tables(db_schema_pattern: str | None = None, table_pattern: str | None = None,
               include_schema: bool = False) -> flight.FlightDescriptor:
    body = b""
    if db_schema_pattern is not None:
        body += field_bytes(2, db_schema_pattern)
    if table_pattern is not None:
        body += field_bytes(3, table_pattern)
    if include_schema:
        body += field_varint(5, 1)
    return command("CommandGetTables", body)


def get_sql_info(*ids: int) -> flight.FlightDescriptor:
    packed = b"".join(varint(i) for i in ids)
    return command("CommandGetSqlInfo", field_bytes(1, packed) if ids else b"")


def cancel_flight_info_request(info: flight.FlightInfo) -> bytes:
    """CancelFlightInfoRequest { FlightInfo info = 1; } (Flight.proto)."""
    return field_bytes(1, info.serialize())


def first_varint_field(body: bytes) -> int:
    """Value of field 1 of a message whose first field is a varint (CancelFlightInfoResult)."""
    assert body and body[0] == 0x08, body
    value, shift = 0, 0
    for b in body[1:]:
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value
    raise ValueError(body)
