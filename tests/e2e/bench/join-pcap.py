#!/usr/bin/env python3
"""WHEP join phases on the wire: per client of the SFU's UDP port, STUN checks (and
which nominate, USE-CANDIDATE), DTLS handshake messages and the first RTP, from a
loopback capture taken while tests/e2e/bench/latency.mjs runs:

    tcpdump -i lo -s 300 -w join.pcap udp &      # then the bench, then stop tcpdump
    python3 tests/e2e/bench/join-pcap.py join.pcap SFU_UDP_PORT [--timeline]

SFU_UDP_PORT is the `udp` port on the second line of the bench's server log
(tests/e2e/artifacts/*-bench-latency.log). Prints p50/min/max over the clients of:
a check → its response, the first ClientHello → the SFU's first flight, the SFU's
Finished → its first video RTP. No dependencies beyond Python 3.
"""
import struct
import sys
from collections import defaultdict


def packets(path):
    with open(path, 'rb') as f:
        data = f.read()
    magic = struct.unpack('<I', data[:4])[0]
    nano = magic == 0xa1b23c4d
    linktype = struct.unpack('<I', data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack('<IIII', data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:  # ethernet
            pkt = pkt[14:]
        elif linktype == 113:  # linux cooked
            pkt = pkt[16:]
        elif linktype == 276:  # linux cooked v2
            pkt = pkt[20:]
        if not pkt or pkt[0] >> 4 != 4:
            continue
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != 17:
            continue
        sport, dport = struct.unpack('>HH', pkt[ihl:ihl + 4])
        yield t, sport, dport, pkt[ihl + 8:]


def stun_desc(p):
    typ = struct.unpack('>H', p[:2])[0]
    attrs = p[20:]
    use = False
    while len(attrs) >= 4:
        k, n = struct.unpack('>HH', attrs[:4])
        if k == 0x0025:
            use = True
        attrs = attrs[4 + (n + 3) // 4 * 4:]
    name = {0x0001: 'STUN req', 0x0101: 'STUN resp'}.get(typ, f'STUN {typ:#x}')
    return name + (' USE-CANDIDATE' if use else '')


HS = {1: 'ClientHello', 2: 'ServerHello', 3: 'HelloVerifyRequest', 11: 'Certificate',
      12: 'ServerKeyExchange', 13: 'CertificateRequest', 14: 'ServerHelloDone',
      15: 'CertificateVerify', 16: 'ClientKeyExchange', 20: 'Finished'}


def dtls_desc(p, encrypted):
    out = []
    while len(p) >= 13:
        ct = p[0]
        n = struct.unpack('>H', p[11:13])[0]
        body = p[13:13 + n]
        if ct == 22:
            if encrypted:
                out.append('Finished(enc)')
            else:
                out.append(HS.get(body[0], f'hs{body[0]}') if body else 'hs?')
        elif ct == 20:
            out.append('CCS')
            encrypted = True
        elif ct == 21:
            out.append('Alert')
        elif ct == 23:
            out.append('AppData')
        p = p[13 + n:]
    return out, encrypted


def main():
    path, sfu = sys.argv[1], int(sys.argv[2])
    flows = defaultdict(list)
    enc = defaultdict(lambda: [False, False])
    for t, sp, dp, p in packets(path):
        if sfu not in (sp, dp) or not p:
            continue
        client = dp if sp == sfu else sp
        to_sfu = dp == sfu
        b = p[0]
        if b < 4:
            d = stun_desc(p)
        elif 20 <= b < 64:
            parts, enc[client][to_sfu] = dtls_desc(p, enc[client][to_sfu])
            d = 'DTLS ' + '+'.join(parts)
        elif 128 <= b < 192:
            pt = p[1] & 0x7f
            d = 'RTCP' if 192 <= p[1] <= 223 else f'RTP pt{pt}'
        else:
            d = f'? {b}'
        flows[client].append((t, '->' if to_sfu else '<-', d, len(p)))
    checks, flights, firsts = [], [], []
    for client, evs in flows.items():
        t0 = evs[0][0]
        if '--timeline' in sys.argv:
            print(f'client port {client}')
            rtp_seen = 0
            for t, dirn, d, n in evs:
                if d.startswith('RTP') or d.startswith('RTCP'):
                    rtp_seen += 1
                    if rtp_seen > 6:
                        continue
                print(f'  {1000 * (t - t0):8.2f} ms  {dirn} {d} ({n} B)')
        ms = [(1000 * (t - t0), dirn, d) for t, dirn, d, _ in evs]
        asked = None
        for t, dirn, d in ms:
            if dirn == '->' and d.startswith('STUN req') and asked is None:
                asked = t
            if dirn == '<-' and d.startswith('STUN resp') and asked is not None:
                checks.append(t - asked)
                asked = None
        first = lambda cond: next((t for t, dirn, d in ms if cond(dirn, d)), None)
        hello = first(lambda dirn, d: dirn == '->' and 'ClientHello' in d)
        flight = first(lambda dirn, d: dirn == '<-' and 'ServerHello' in d)
        finished = first(lambda dirn, d: dirn == '<-' and 'CCS' in d)
        video = first(lambda dirn, d: dirn == '<-' and d.startswith('RTP') and d != 'RTP pt111')
        if hello is not None and flight is not None:
            flights.append(flight - hello)
        if finished is not None and video is not None:
            firsts.append(video - finished)
    for name, v in [('check -> response', checks),
                    ('ClientHello -> SFU flight', flights),
                    ('SFU Finished -> first video RTP', firsts)]:
        v.sort()
        if v:
            p50 = v[max(0, -(-len(v) // 2) - 1)]
            print(f'{name}: n={len(v)} p50={p50:.1f} min={v[0]:.1f} max={v[-1]:.1f} ms')


main()
