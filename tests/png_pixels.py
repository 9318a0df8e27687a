#!/usr/bin/python3
"""Counts the pixels of a PNG screenshot (8-bit RGB or RGBA, not interlaced, as Chromium writes
them) with only zlib and struct: all of them, the non-white ones, and those within a distance of
40 (per channel) of each colour given as #rrggbb. Prints one line of JSON.
Usage: tests/png_pixels.py FILE.png [#rrggbb ...]"""
import json
import struct
import sys
import zlib


def read_png(path):
    data = open(path, 'rb').read()
    if data[:8] != b'\x89PNG\r\n\x1a\n':
        raise ValueError('%s: not a PNG file' % path)
    pos, idat, header = 8, b'', None
    while pos + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
        elif kind == b'IEND':
            break
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError('%s: want 8-bit RGB/RGBA, not interlaced (got depth %d colour %d)'
                         % (path, depth, color))
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        unfilter(kind, line, previous, channels)
        rows.append(line)
        previous = line
    return width, height, channels, rows


def unfilter(kind, line, prev, bpp):
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 2:
            line[i] = (line[i] + b) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255


def main():
    path, colours = sys.argv[1], [c.lstrip('#') for c in sys.argv[2:]]
    targets = [tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) for c in colours]
    width, height, channels, rows = read_png(path)
    non_white, near = 0, [0] * len(targets)
    for line in rows:
        for x in range(0, len(line), channels):
            r, g, b = line[x], line[x + 1], line[x + 2]
            if r < 245 or g < 245 or b < 245:
                non_white += 1
                for k, (tr, tg, tb) in enumerate(targets):
                    if abs(r - tr) <= 40 and abs(g - tg) <= 40 and abs(b - tb) <= 40:
                        near[k] += 1
    print(json.dumps({'width': width, 'height': height, 'pixels': width * height,
                      'non_white': non_white,
                      'near': {'#' + c: n for c, n in zip(colours, near)}}))


if __name__ == '__main__':
    main()
