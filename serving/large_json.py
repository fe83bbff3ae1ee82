"""Reading and writing large JSON bodies a piece at a time, so that no single call holds the GIL for long.

A REST body of tens of megabytes parsed by one ``orjson.loads`` holds the GIL for about a second: moved
to a worker thread it would still stop the event loop (and every status call and small prediction) for
that second. Here a large body is split at its structure instead, and each piece (at most ``MAX_PIECE``
bytes, a few milliseconds of work) is parsed on its own; between pieces the GIL is free for the loop.

1. A structural scan, one ``BLOCK`` at a time with numpy (which releases the GIL in its loops): real
   quotes (not escaped), and outside strings the brackets, commas and colons with their nesting level.
2. A recursive descent over containers too large to parse in one piece: an array is cut at its own
   commas into runs of elements, an object at its own commas into runs of members; a run is parsed as
   ``[run]`` / ``{run}``; an element or member value that is itself too large is descended into.
3. Each piece goes to orjson; a piece orjson refuses goes to Python's ``json`` with rapidjson's NaN and
   Inf tokens (as the whole-body path does); anything still wrong makes the whole body go to the exact
   parser (``tensor_codec``'s), which reports rapidjson's message and offset. For a large body that
   parser runs a pure-Python scanner (``python_loads``) so that even a malformed body cannot hold the
   GIL for long; it is slower, and only malformed bodies pay for it.

The result is the value the whole-body parse gives: duplicate keys keep the last value, trailing bytes
after the top-level value are ignored (``kParseStopWhenDoneFlag``).

``dumps_large`` writes a response whose arrays are large in row chunks, for the same reason.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import time
from json import decoder as json_decoder
from json import scanner as json_scanner
from typing import Any

import numpy as np
import orjson

# Bodies larger than this are parsed in pieces (and, by the front ends, off the event loop).
LARGE_BODY = 1 << 20
BLOCK = 1 << 18
MAX_PIECE = 2 * BLOCK

_WS = re.compile(rb"[ \t\r\n]*")
_WS_BYTES = b" \t\r\n"
_OPEN = {ord("["), ord("{")}
_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[list(b"[]{},:")] = True
_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[list(b"[{")] = 1
_DELTA[list(b"]}")] = -1
_INF_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?)Inf(?!inity)')


_paused = 0


@contextlib.contextmanager
def collector_paused():
    """No cyclic garbage collection while a large body's JSON values exist (use from the event loop only).

    Parsing a large body creates millions of lists; every full collection meanwhile traverses all of them
    (and everything TensorFlow holds), 0.1-0.4 s with the GIL held, which stalls the loop. Those values
    hold no cycles, so collection waits until they are freed.
    """
    global _paused
    if _paused == 0 and not gc.isenabled():  # someone else disabled it: leave it so
        yield
        return
    _paused += 1
    gc.disable()
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            gc.enable()


def yield_gil() -> None:
    """Lets a thread waiting for the GIL (the event loop) have it now, not at the next switch interval.

    Only between pieces of large work: it may hand the GIL away for milliseconds.
    """
    time.sleep(0)


class Malformed(Exception):
    """The body is not the JSON the piecewise parse can read: the caller uses the exact parser."""


class NumberTooBig(ValueError):
    """A JSON number beyond double range (rapidjson: kParseErrorNumberTooBig); Python would read infinity."""


def strict_float(text: str) -> float:
    """``parse_float`` for Python's json: a literal too large for a double is an error, as in rapidjson."""
    value = float(text)
    if math.isinf(value):
        raise NumberTooBig(text)
    return value


def loads(body: bytes) -> Any:
    """The value of a JSON document, parsed in pieces. Raises Malformed for anything not plainly valid."""
    return _Parser(body).parse()


def contains_bool_tokens(body: bytes) -> bool:
    """``b"true" in body or b"false" in body``, one block at a time."""
    for token in (b"true", b"false"):
        for start in range(0, len(body), BLOCK):
            if body.find(token, start, start + BLOCK + len(token) - 1) >= 0:
                return True
    return False


class _Parser:
    def __init__(self, body: bytes):
        self._body = body
        self._bytes = np.frombuffer(body, dtype=np.uint8)
        self._entry: list[tuple[int, bool]] = []  # per block: nesting depth and in-string state at its start
        self._last_comma: list[dict[int, int]] = []  # per block: depth -> its last comma at that depth
        self._top_end = -1  # just past the first bracket that closes depth 1 (the top-level value's end)
        depth, in_string = 0, False
        for block in range((len(body) + BLOCK - 1) // BLOCK):
            yield_gil()
            self._entry.append((depth, in_string))
            positions, kinds, depths, quotes = self._block(block)
            commas = kinds == 0x2C
            comma_depths = depths[commas][::-1]
            found, index = np.unique(comma_depths, return_index=True)
            last = positions[commas][::-1][index]
            self._last_comma.append(dict(zip(found.tolist(), last.tolist())))
            if self._top_end < 0:
                closes = positions[(depths == 1) & ((kinds == 0x5D) | (kinds == 0x7D))]
                if len(closes):
                    self._top_end = int(closes[0]) + 1
            if len(positions):
                depth = int(depths[-1] + _DELTA[kinds[-1]])
            in_string ^= bool(len(quotes) % 2)

    # ---------------------------------------------------------------------------------------- scanning

    def _real_quotes(self, block: int) -> np.ndarray:
        start = block * BLOCK
        segment = self._bytes[start:start + BLOCK]
        quotes = np.flatnonzero(segment == 0x22) + start
        if len(quotes) == 0:
            return quotes
        escaped_candidates = quotes[(quotes > 0) & (self._bytes[np.maximum(quotes - 1, 0)] == 0x5C)]
        if len(escaped_candidates) == 0:
            return quotes
        escaped = set()
        for quote in escaped_candidates.tolist():  # rare: count the backslashes before each
            run = 0
            while quote - run - 1 >= 0 and self._body[quote - run - 1] == 0x5C:
                run += 1
            if run % 2:
                escaped.add(quote)
        return np.array([q for q in quotes.tolist() if q not in escaped], dtype=np.int64)

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Structural characters outside strings in a block: positions, byte values, nesting depth before each;
        and the block's real quotes."""
        start = block * BLOCK
        depth_in, in_string_in = self._entry[block]
        segment = self._bytes[start:start + BLOCK]
        positions = np.flatnonzero(_STRUCTURAL[segment])
        quotes = self._real_quotes(block)
        if len(quotes) or in_string_in:
            inside = (np.searchsorted(quotes, positions + start) + in_string_in) % 2 == 1
            positions = positions[~inside]
        kinds = segment[positions]
        delta = _DELTA[kinds]
        depths = np.cumsum(delta, dtype=np.int32)
        depths += depth_in
        depths -= delta
        return positions + start, kinds, depths, quotes

    def _separators(self, lo: int, hi: int, depth: int, char: int, sample: bool) -> list[int]:
        """Positions in [lo, hi) of ``char`` at nesting ``depth``; with ``sample`` only the last comma of each block.

        Sampling reads the blocks inside the span from the first pass's table; only the two blocks at its
        edges (which other containers may share) are scanned again.
        """
        found: list[int] = []
        if hi <= lo:
            return found
        first, last = lo // BLOCK, (hi - 1) // BLOCK
        for block in range(first, last + 1):
            if block % 16 == 0:
                yield_gil()
            if sample and first < block < last:
                position = self._last_comma[block].get(depth)
                if position is not None:
                    found.append(position)
                continue
            positions, kinds, depths, _ = self._block(block)
            picked = positions[(kinds == char) & (depths == depth) & (positions >= lo) & (positions < hi)]
            if sample:
                if len(picked):
                    found.append(int(picked[-1]))
            else:
                found.extend(picked.tolist())
        return found

    def _first_separator(self, lo: int, hi: int, depth: int, char: int) -> int | None:
        for block in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            positions, kinds, depths, _ = self._block(block)
            picked = positions[(kinds == char) & (depths == depth) & (positions >= lo) & (positions < hi)]
            if len(picked):
                return int(picked[0])
        return None

    # ---------------------------------------------------------------------------------------- parsing

    def parse(self) -> Any:
        lo = _WS.match(self._body).end()
        if lo == len(self._body) or self._body[lo] not in _OPEN:
            raise Malformed("not a container")
        if self._top_end < 0:
            raise Malformed("unterminated document")
        return self._value(lo, self._top_end, 0)

    def _strip(self, lo: int, hi: int) -> tuple[int, int]:
        lo = _WS.match(self._body, lo, hi).end()
        while hi > lo and self._body[hi - 1] in _WS_BYTES:
            hi -= 1
        return lo, hi

    def _value(self, lo: int, hi: int, depth: int) -> Any:
        lo, hi = self._strip(lo, hi)
        if hi - lo <= MAX_PIECE or self._body[lo] not in _OPEN:
            return _piece(self._body[lo:hi])
        closing = 0x5D if self._body[lo] == 0x5B else 0x7D
        if self._body[hi - 1] != closing:
            raise Malformed("mismatched brackets")
        if closing == 0x5D:
            return self._array(lo, hi, depth)
        return self._object(lo, hi, depth)

    def _runs(self, lo: int, hi: int, depth: int):
        """The container [lo, hi)'s children as (start, end) spans between its own commas, sampled."""
        commas = self._separators(lo + 1, hi - 1, depth + 1, 0x2C, sample=True)
        bounds = [lo, *commas, hi - 1]
        return [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1)], bool(commas)

    def _array(self, lo: int, hi: int, depth: int) -> list:
        result: list = []
        runs, has_commas = self._runs(lo, hi, depth)
        for a, b in runs:
            yield_gil()
            if b - a <= MAX_PIECE:
                items = _piece(b"[" + self._body[a:b] + b"]")
                if has_commas and not items:
                    raise Malformed("empty element")
                result.extend(items)
                continue
            for x, y in self._children(a, b, depth):
                if y - x <= MAX_PIECE:
                    items = _piece(b"[" + self._body[x:y] + b"]")
                    if not items:
                        raise Malformed("empty element")
                    result.extend(items)
                else:
                    result.append(self._value(x, y, depth + 1))
        return result

    def _object(self, lo: int, hi: int, depth: int) -> dict:
        result: dict = {}
        runs, has_commas = self._runs(lo, hi, depth)
        for a, b in runs:
            yield_gil()
            if b - a <= MAX_PIECE:
                members = _piece(b"{" + self._body[a:b] + b"}")
                if has_commas and not members:
                    raise Malformed("empty member")
                result.update(members)
                continue
            for x, y in self._children(a, b, depth):
                if y - x <= MAX_PIECE:
                    members = _piece(b"{" + self._body[x:y] + b"}")
                    if not members:
                        raise Malformed("empty member")
                    result.update(members)
                    continue
                colon = self._first_separator(x, y, depth + 1, 0x3A)
                if colon is None:
                    raise Malformed("member without a colon")
                key = _piece(self._body[x:colon])
                if not isinstance(key, str):
                    raise Malformed("member name is not a string")
                result[key] = self._value(colon + 1, y, depth + 1)  # a repeated name: the last value wins
        return result

    def _children(self, a: int, b: int, depth: int) -> list[tuple[int, int]]:
        """Every child span of a run [a, b) that holds a child too large for one piece, small ones merged."""
        commas = self._separators(a, b, depth + 1, 0x2C, sample=False)
        bounds = [a - 1, *commas, b]
        spans = [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1)]
        merged: list[tuple[int, int]] = []
        for x, y in spans:
            if merged and y - x <= MAX_PIECE and merged[-1][1] - merged[-1][0] <= MAX_PIECE and \
                    y - merged[-1][0] <= MAX_PIECE:
                merged[-1] = (merged[-1][0], y)  # join small neighbours (the comma between stays in the run)
            else:
                merged.append((x, y))
        return merged


def _piece(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    if b"Inf" in data:
        data = _INF_TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith(b'"') else m.group(1) + b"Infinity", data)
    try:
        return json.loads(data, parse_float=strict_float)  # NaN, Infinity, integers beyond 64 bits, lone surrogates
    except (ValueError, RecursionError):
        raise Malformed("piece does not parse") from None


# ---------------------------------------------------------------------------------------------- exact, slow


def python_raw_decode(text: str, start: int) -> tuple[Any, int]:
    """``json.JSONDecoder().raw_decode`` with a pure-Python scanner (and rapidjson's Inf tokens).

    Same values, messages and offsets as the C scanner, but the GIL is released between Python steps.
    """
    memo: dict = {}
    parse_string = json_decoder.scanstring
    match_number = json_scanner.NUMBER_RE.match

    def scan_once(string: str, idx: int):
        try:
            char = string[idx]
        except IndexError:
            raise StopIteration(idx) from None
        if char == '"':
            return parse_string(string, idx + 1, True)
        if char == "{":
            return json_decoder.JSONObject((string, idx + 1), True, scan_once, None, None, memo)
        if char == "[":
            return json_decoder.JSONArray((string, idx + 1), scan_once)
        if char == "n" and string.startswith("null", idx):
            return None, idx + 4
        if char == "t" and string.startswith("true", idx):
            return True, idx + 4
        if char == "f" and string.startswith("false", idx):
            return False, idx + 5
        match = match_number(string, idx)
        if match is not None:
            integer, fraction, exponent = match.groups()
            if fraction or exponent:
                return strict_float(integer + (fraction or "") + (exponent or "")), match.end()
            return int(integer), match.end()
        if char == "N" and string.startswith("NaN", idx):
            return math.nan, idx + 3
        sign = 1.0
        if char == "-":
            sign, idx, char = -1.0, idx + 1, string[idx + 1:idx + 2]
        if char == "I" and string.startswith("Infinity", idx):
            return sign * math.inf, idx + 8
        if char == "I" and string.startswith("Inf", idx):
            return sign * math.inf, idx + 3
        raise StopIteration(idx if sign > 0 else idx - 1)

    try:
        return scan_once(text, start)
    except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", text, e.value) from None
    finally:
        memo.clear()


# ---------------------------------------------------------------------------------------------- writing


def dumps_large(document: Any, option: int) -> bytes:
    """``orjson.dumps(document)`` with large arrays and lists written in chunks of rows."""
    out: list[bytes] = []
    _write(document, option, out)
    return b"".join(out)


def _write(value: Any, option: int, out: list[bytes]) -> None:
    if isinstance(value, dict):
        out.append(b"{")
        for i, (key, item) in enumerate(value.items()):
            out.append(b"," if i else b"")
            out.append(orjson.dumps(key) + b":")
            _write(item, option, out)
        out.append(b"}")
        return
    rows = _row_chunk(value)
    if rows is None:
        out.append(orjson.dumps(value, option=option))
        return
    out.append(b"[")
    for start in range(0, len(value), rows):
        if start:
            yield_gil()
        chunk = orjson.dumps(value[start:start + rows], option=option)
        out.append((b"," if start else b"") + chunk[1:-1])
    out.append(b"]")


def _row_chunk(value: Any) -> int | None:
    """Rows per chunk for a large array or list, None to write it in one call."""
    if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) > 1 and value.nbytes > MAX_PIECE:
        return max(1, len(value) * MAX_PIECE // value.nbytes)
    if isinstance(value, list) and len(value) > 1024:
        return 1024
    return None
