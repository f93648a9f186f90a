#!/usr/bin/env python3
"""Writes seed inputs of the fuzz targets into fuzz/corpus/<target>/ (names seed_*).

The corpus kept in the repository is what `cargo fuzz cmin` left of these seeds plus
what the fuzzer found; re-running this script only adds the seeds back.
Sources: the SIPp scenarios in tests/scenarios (SIPp [keywords] replaced by
concrete values), the config files, hand-built RTP/RTCP/RFC 4733 packets and,
when ../shared/peers/pcap exists, the UDP payloads of its captures.

Run from the repository root: python3 fuzz/make_seeds.py
"""

import glob
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
SEP = b"\0\0\0\0"  # switchboard::fuzzing::DATAGRAM_SEPARATOR

seeds = {t: {} for t in ["sip_message", "sdp", "rtp_rtcp", "rfc4733", "yaml_config"]}


def add(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    seeds[target][re.sub(r"[^A-Za-z0-9_.-]", "_", name)] = data


# --------------------------------------------------------------------- SIP

# SIPp writes the peer as 10.0.0.5:5062 and the appliance as 10.0.0.1:5060 (the datagrams come from 127.0.0.5, src/fuzzing.rs).
KEYWORDS = {
    "local_ip": "10.0.0.5", "local_port": "5062", "remote_ip": "10.0.0.1", "remote_port": "5060",
    "service": "1000", "transport": "UDP", "pid": "4242", "call_number": "1",
    "call_id": "1-4242@10.0.0.5", "media_ip": "10.0.0.5", "media_ip_type": "4", "local_ip_type": "4",
    "auto_media_port": "6000", "media_port": "6000", "contact_hostport": "10.0.0.5:5062",
    "next_url": "sip:1000@10.0.0.1:5060", "$inv_cseq": "$INV_CSEQ",
    "routes": "Route: <sip:10.0.0.1:5060;lr>",
    "authentication": 'Authorization: Digest username="1000", realm="switchboard", nonce="4f1c2b", '
                      'uri="sip:10.0.0.1:5060", response="6629fae49393a05397450978507c4ef1", algorithm=MD5',
}


def last_headers(method):
    """[last_*:] as echoed from what the appliance sent: its INVITE (the SIPp UAS scenarios)
    or an in-dialog request (REFER, BYE) for the UAC ones."""
    after_invite = method == "INVITE"
    p = "$INV_" if after_invite else "$"
    to = "To: <sip:bob@10.0.0.5:5062>" if after_invite else "To: sipp <sip:sipp@10.0.0.5:5062>;tag=4242SIPpTag091"
    return {
        "last_Via:": f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch={p}BRANCH;rport",
        "last_From:": f"From: <sip:switchboard@10.0.0.1:5060>;tag={p}FROMTAG",
        "last_To:": to,
        "last_Call-ID:": f"Call-ID: {p}CALLID",
        "last_CSeq:": f"CSeq: {p}CSEQ {method}",
        "last_Record-Route:": "Record-Route: <sip:10.0.0.9;lr>",
    }


def sipp_message(text, index, method):
    lines = [l.strip() for l in text.strip("\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    if "" in lines:
        i = lines.index("")
        head, body = lines[:i], lines[i + 1:]
    else:
        head, body = lines, []
    body = "".join(l + "\r\n" for l in body if l)
    last = last_headers(method)

    def sub(m):
        k = m.group(1)
        if k in KEYWORDS:
            return KEYWORDS[k]
        if k in last:
            return last[k]
        if k == "branch":
            return f"z9hG4bK-4242-1-{index}"
        if k.startswith("branch-"):
            return "z9hG4bK-4242-1-0"  # the INVITE's
        if k == "peer_tag_param":
            return ";tag=$TOTAG"
        if k == "len":
            return "@LEN@"
        return m.group(0)

    head = [re.sub(r"\[([^\] <>\"]+)\]", sub, l) for l in head]
    head = [l for l in head if l]
    body = re.sub(r"\[([^\] <>\"]+)\]", sub, body)
    msg = "\r\n".join(head) + "\r\n\r\n" + body
    return msg.replace("@LEN@", str(len(body.encode()))).encode(), body.encode()


def scenarios():
    files = sorted(glob.glob(os.path.join(ROOT, "tests", "scenarios", "*.xml")))
    files += sorted(glob.glob(os.path.join(ROOT, "..", "shared", "peers", "*.xml")))
    for path in files:
        xml = open(path, encoding="latin-1").read()
        name = os.path.basename(path)[:-4]
        if "/shared/" in path:
            name = "peers_" + name
        flow, method, index = [], "INVITE", 0
        for m in re.finditer(r'<recv request="(\w+)"|<recv response|<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>', xml, re.S):
            index += 1
            if m.group(1):
                method = m.group(1)
                continue
            if m.group(2) is None:
                continue
            msg, body = sipp_message(m.group(2), index - 1, method)
            add("sip_message", f"{name}_{len(flow)}", msg)
            if body.startswith(b"v=0"):
                add("sdp", f"{name}_{len(flow)}", body)
            flow.append(msg)
        if len(flow) > 1:
            add("sip_message", f"{name}_flow", SEP.join(flow))


SDP_OFFER = ("v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
             "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n")
SDP_OPUS = ("v=0\r\no=baresip 1 2 IN IP6 2001:db8::5\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\n"
            "m=audio 5004 RTP/AVP 111 0 101 102\r\na=rtpmap:111 opus/48000/2\r\n"
            "a=fmtp:111 useinbandfec=1;stereo=0;maxplaybackrate=16000;maxaveragebitrate=20000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-15\r\na=ptime:40\r\n")
SDP_MULTI = ("v=0\r\no=- 7 7 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=sendonly\r\n"
             "m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
             "m=audio 5008 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxxx\r\n"
             "m=audio 5010/2 RTP/AVPF 8 0\r\nc=IN IP4 224.2.1.1/127\r\na=inactive\r\n")


def sip_handmade():
    inv = ("INVITE sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKinv1;rport\r\n"
           "Max-Forwards: 70\r\nFrom: \"Alice \\\"A\\\"\" <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>\r\n"
           "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5062>;expires=60\r\n"
           "Record-Route: <sip:proxy.example;lr>, <sip:[2001:db8::9]:5070;lr;transport=tcp>\r\n"
           f"Content-Type: application/sdp\r\nContent-Length: {len(SDP_OFFER)}\r\n\r\n{SDP_OFFER}")
    add("sip_message", "invite_record_route", inv)
    ack = ("ACK sip:alice@10.0.0.5:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKack1\r\n"
           "From: <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>;tag=$TOTAG\r\nCall-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
    info_body = "Signal=5\r\nDuration=160\r\n"
    info = ("INFO sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKinfo1\r\n"
            "From: <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>;tag=$TOTAG\r\nCall-ID: call-1\r\nCSeq: 2 INFO\r\n"
            f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(info_body)}\r\n\r\n{info_body}")
    frag = "SIP/2.0 200 OK\r\n"
    notify = ("NOTIFY sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKn1\r\n"
              "From: <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>;tag=$TOTAG\r\nCall-ID: call-1\r\nCSeq: 3 NOTIFY\r\n"
              "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n"
              f"Content-Type: message/sipfrag;version=2.0\r\nContent-Length: {len(frag)}\r\n\r\n{frag}")
    refer_ok = ("SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=$BRANCH;rport\r\n"
                "From: <sip:1000@10.0.0.1>;tag=$FROMTAG\r\nTo: <sip:alice@10.0.0.5>;tag=a1\r\nCall-ID: $CALLID\r\n"
                "CSeq: $CSEQ REFER\r\nContent-Length: 0\r\n\r\n")
    bye = ("BYE sip:1000@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbye1\r\n"
           "From: <sip:alice@10.0.0.5>;tag=a1\r\nTo: <sip:1000@10.0.0.1>;tag=$TOTAG\r\nCall-ID: call-1\r\nCSeq: 4 BYE\r\nContent-Length: 0\r\n\r\n")
    for name, m in [("ack", ack), ("info_dtmf", info), ("notify_sipfrag", notify), ("refer_202", refer_ok), ("bye", bye)]:
        add("sip_message", name, m)
    add("sip_message", "call_flow_transfer", SEP.join(x.encode() for x in [inv, ack, info, refer_ok, notify, bye]))
    cancel = inv.replace("INVITE sip", "CANCEL sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL").split("Content-Type")[0] + "Content-Length: 0\r\n\r\n"
    add("sip_message", "invite_cancel", SEP.join([inv.encode(), cancel.encode()]))

    # Answers to the endpoint's own REGISTER and INVITE (placeholders: src/fuzzing.rs).
    def resp(code, reason, p, method, extra="", body=""):
        return (f"SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={p}BRANCH;rport=5060;received=10.0.0.1\r\n"
                f"From: <sip:1000@pbx.example.com>;tag={p}FROMTAG\r\nTo: <sip:1000@pbx.example.com>;tag=srv1\r\n"
                f"Call-ID: {p}CALLID\r\nCSeq: {p}CSEQ {method}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}")
    chal = 'WWW-Authenticate: Digest realm="pbx.example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a359", algorithm=MD5, qop="auth"\r\n'
    reg401 = resp(401, "Unauthorized", "$REG_", "REGISTER", chal)
    reg200 = resp(200, "OK", "$REG_", "REGISTER", "Contact: <sip:1000@10.0.0.1:5060>;expires=120\r\n")
    add("sip_message", "register_401", reg401)
    add("sip_message", "register_200", reg200)
    add("sip_message", "register_401_200", SEP.join([reg401.encode(), reg200.encode()]))
    pchal = chal.replace("WWW-", "Proxy-")
    inv407 = resp(407, "Proxy Authentication Required", "$INV_", "INVITE", pchal)
    inv180 = resp(180, "Ringing", "$INV_", "INVITE", "Contact: <sip:bob@10.0.0.5:5062>\r\n")
    inv183 = resp(183, "Session Progress", "$INV_", "INVITE", "Contact: <sip:bob@10.0.0.5:5062>\r\nContent-Type: application/sdp\r\n", SDP_OFFER)
    inv200 = resp(200, "OK", "$INV_", "INVITE", "Contact: <sip:bob@10.0.0.5:5062;transport=udp>\r\nRecord-Route: <sip:10.0.0.9;lr>\r\nContent-Type: application/sdp\r\n", SDP_OFFER)
    inv486 = resp(486, "Busy Here", "$INV_", "INVITE")
    add("sip_message", "dial_407", inv407)
    add("sip_message", "dial_180_183_200", SEP.join([inv180.encode(), inv183.encode(), inv200.encode()]))
    add("sip_message", "dial_486", inv486)

    # Odd but legal shapes: compact forms, folding, IPv6, several Vias, a response with a body.
    add("sip_message", "compact_folded",
        "OPTIONS sip:1000@[2001:db8::1]:5060;transport=udp SIP/2.0\r\nv: SIP/2.0/UDP [2001:db8::5]:5062;branch=z9hG4bKopt;received=2001:db8::5,\r\n"
        " SIP/2.0/TCP proxy.example:5070;branch=z9hG4bKp2\r\nf: <sip:a@b>;tag=1\r\nt: sip:1000@[2001:db8::1]\r\ni: opt-1\r\n"
        "CSeq: 9 OPTIONS\r\nm: *\r\nk: replaces\r\nl: 0\r\n\r\n")
    add("sip_message", "register_in", "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bKr\r\n"
        "From: <sip:1000@10.0.0.1>;tag=r\r\nTo: <sip:1000@10.0.0.1>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n")
    add("sip_message", "bad_content_length", inv.replace(f"Content-Length: {len(SDP_OFFER)}", "Content-Length: 5\r\nl: 7"))
    add("sip_message", "keepalive", "\r\n\r\n")


# --------------------------------------------------------------------- RTP / RTCP / RFC 4733

def rtp(pt, seq, ts, ssrc, payload, marker=False, csrcs=(), ext=None, pad=0):
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += b"\0" * (pad - 1) + bytes([pad])
    return out


def rtcp_header(pt, count, body, pad=0):
    if pad:
        body = body + b"\0" * (pad - 1) + bytes([pad])
    return struct.pack("!BBH", 0x80 | (0x20 if pad else 0) | count, pt, (len(body) + 4) // 4 - 1) + body


def report_block(ssrc):
    return struct.pack("!IIIIII", ssrc, (12 << 24) | 5, 0x0001_0203, 40, 0x1234_5678, 65536)


def sdes(ssrc, cname):
    items = bytes([1, len(cname)]) + cname + b"\0"
    items += b"\0" * (-(4 + len(items)) % 4)
    return rtcp_header(202, 1, struct.pack("!I", ssrc) + items)


def event(ev, end, vol, dur):
    return struct.pack("!BBH", ev, (0x80 if end else 0) | vol, dur)


def media():
    sr = rtcp_header(200, 1, struct.pack("!IQIII", 0xCAFE, 0xE000_0000_8000_0000, 16000, 100, 16000) + report_block(0x1234_5678))
    rr = rtcp_header(201, 2, struct.pack("!I", 0xCAFE) + report_block(0x1234_5678) + report_block(7))
    bye = rtcp_header(203, 1, struct.pack("!I", 0xCAFE) + bytes([7]) + b"hang up")
    app = rtcp_header(204, 0, struct.pack("!I", 0xCAFE) + b"NAME")
    add("rtp_rtcp", "rtcp_sr_sdes", sr + sdes(0xCAFE, b"alice@10.0.0.5"))
    add("rtp_rtcp", "rtcp_rr_sdes_bye", rr + sdes(0xCAFE, b"x") + bye)
    add("rtp_rtcp", "rtcp_app_padded", rtcp_header(201, 0, struct.pack("!I", 0xCAFE), pad=4) + app)
    add("rtp_rtcp", "rtp_pcmu", rtp(0, 1, 160, 0xCAFE, b"\xff" * 160, marker=True))
    add("rtp_rtcp", "rtp_csrc_ext_pad", rtp(111, 65535, 0xFFFF_FF00, 1, b"\x01\x02\x03", csrcs=(9, 10), ext=b"\x10\xaa\x00\x00", pad=3))
    add("rtp_rtcp", "rtp_event", rtp(101, 7, 8000, 0xCAFE, event(5, True, 10, 800)))

    add("rfc4733", "event_5", event(5, False, 10, 160))
    add("rfc4733", "event_star_end", event(10, True, 63, 1280))
    add("rfc4733", "info_relay", "Signal=#\r\nDuration=250\r\n")
    add("rfc4733", "info_number", "11")
    # Receiver streams (src/fuzzing.rs rfc4733): clock byte, then seq, ts, flags (marker, length), gap.
    def rec(seq, ts, marker, payload, gap5ms):
        return struct.pack("!HIBB", seq, ts, (0x80 if marker else 0) | len(payload), gap5ms) + payload
    press = [rec(1, 1000, True, event(1, False, 10, 160), 0), rec(2, 1000, False, event(1, False, 10, 320), 4),
             rec(3, 1000, False, event(1, True, 10, 480), 4), rec(4, 1000, False, event(1, True, 10, 480), 0),
             rec(5, 2000, True, event(11, False, 10, 160), 40), rec(6, 2000, False, event(11, False, 10, 320), 4)]
    add("rfc4733", "stream_8k", b"\0" + b"".join(press))
    add("rfc4733", "stream_48k_lost_end", b"\1" + b"".join(press[:2]) + rec(9, 7000, True, event(3, True, 10, 960), 200))


def pcap_udp_payloads(path):
    """UDP payloads of an Ethernet/IPv4 or Linux cooked pcap."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(end + "I", data[20:24])[0]
    at, out = 24, []
    while at + 16 <= len(data):
        incl = struct.unpack(end + "I", data[at + 8:at + 12])[0]
        pkt = data[at + 16:at + 16 + incl]
        at += 16 + incl
        l2 = {1: 14, 113: 16, 101: 0, 276: 20}.get(linktype)
        if l2 is None or len(pkt) < l2 + 28:
            continue
        ip = pkt[l2:]
        if ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        out.append(ip[ihl + 8:])
    return out


def captures():
    for path in sorted(glob.glob(os.path.join(ROOT, "..", "shared", "peers", "pcap", "*.pcap"))):
        name = os.path.basename(path)[:-5]
        payloads = pcap_udp_payloads(path)
        for i, p in enumerate(payloads[:3] + payloads[-1:]):
            add("rtp_rtcp", f"{name}_{i}", p)
        events = [p for p in payloads if len(p) >= 16 and p[1] & 0x7F not in (0, 8)]
        for i, p in enumerate(events[:4] + events[-2:]):
            add("rfc4733", f"{name}_event_{i}", p[12:])
        if events:
            # The capture's event packets as a receiver stream, 20 ms apart.
            stream = b"\0" + b"".join(struct.pack("!HIBB", *struct.unpack("!HI", p[2:8]), (p[1] & 0x80) | min(len(p) - 12, 7), 4) + p[12:19] for p in events[:40])
            add("rfc4733", f"{name}_stream", stream)


# --------------------------------------------------------------------- YAML

def yaml():
    add("yaml_config", "switchboard", open(os.path.join(ROOT, "config", "switchboard.yaml"), "rb").read())
    add("yaml_config", "minimal", 'routes:\n  - match: "*"\n    agent: a\nagents:\n  a:\n    mode: echo\n')
    add("yaml_config", "sip_calls",
        'sip:\n  t1_ms: 500\nmedia:\n  jitter_buffer: { target_ms: 40 }\nlogging:\n  level: "info,switchboard=debug"\n'
        'calls:\n  shutdown_grace_s: 2\nroutes:\n  - match: "1000"\n    agent: echo\n  - match: "ring"\n    agent: ringer\n'
        '  - match: "short"\n    agent: short\nagents:\n  echo:\n    echo_delay_ms: 300\n  ringer:\n    answer_after_ms: 5000\n'
        '  short:\n    mode: silent\n    max_duration_s: 2\n')
    add("yaml_config", "campaign_caller",
        'calls:\n  record_dir: records\nroutes:\n  - match: "*"\n    agent: caller\nagents:\n  caller:\n    mode: silent\n'
        '    max_duration_s: 2\n    variables:\n      first_name: there\n')
    add("yaml_config", "accounts",
        'sip:\n  listen: "[::]:5060"\n  transports: [udp, tcp]\n  advertised_address: 203.0.113.10\naccounts:\n  pbx:\n'
        '    domain: pbx.example.com\n    username: "1000"\n    password_env: PBX_PASSWORD\n    outbound_proxy: "[2001:db8::1]:5070"\n'
        '    transport: tcp\n    expires_s: 600\nroutes:\n  - match: "2*"\n    agent: a\nagents:\n  a: &agent\n    mode: echo\n  b: *agent\n')
    add("yaml_config", "campaign_full",
        'campaign:\n  name: spring-reminders\n  agent: reminders\n  account: pbx\n  contacts: contacts.csv\n  max_concurrent: 5\n'
        '  calls_per_second: 2.0\n  ring_timeout_s: 30\n  timezone: Europe/London\n'
        '  window: { start: "09:00", end: "20:00", days: [mon, tue, wed, thu, fri, sat, sun] }\n  retry:\n'
        '    busy: { max_attempts: 3, delay_s: 300 }\n    no_answer: { max_attempts: 2, delay_s: 3600 }\n    failed: { max_attempts: 1 }\n')
    add("yaml_config", "campaign_min", "campaign:\n  name: a\n  agent: b\n  contacts: /abs/c.csv\n")


def main():
    scenarios()
    sip_handmade()
    for name, body in [("offer", SDP_OFFER), ("opus_ipv6", SDP_OPUS), ("multi_hold", SDP_MULTI)]:
        add("sdp", name, body)
    media()
    captures()
    yaml()
    for target, files in seeds.items():
        d = os.path.join(OUT, target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, "seed_" + name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(files)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
