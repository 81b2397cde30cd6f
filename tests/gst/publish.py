#!/usr/bin/env python3
"""Publish H.264 test video to a WHIP endpoint with GStreamer's whipsink (gst-plugin-webrtchttp).

usage: publish.py WHIP_URL STREAM_KEY SECONDS [--ecdsa-pem FILE]

GStreamer 1.22's DTLS agent always generates an RSA-2048 certificate. A str0m/dimpl peer
only speaks ECDHE_ECDSA suites and, as DTLS server, only requests ECDSA client
certificates, so with the default certificate the handshake fails. --ecdsa-pem swaps the
certificate of every dtlssrtpdec (cert + key PEM) before it leaves NULL state, which is also
before webrtcbin computes the SDP fingerprint.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main():
    url, key, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pem = None
    if "--ecdsa-pem" in sys.argv:
        pem = open(sys.argv[sys.argv.index("--ecdsa-pem") + 1]).read()
    Gst.init(None)
    pipe = Gst.parse_launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 "
        "! video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 pt=102 "
        "! capsfilter name=rtpcaps caps=application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
    )

    def on_added(_bin, _sub, el):
        f = el.get_factory()
        if pem and f is not None and f.get_name() == "dtlssrtpdec":
            el.set_property("pem", pem)
            print(f"publish.py: ECDSA certificate set on {el.get_name()}", flush=True)

    pipe.connect("deep-element-added", on_added)
    # whipsink is added and linked only now, so the handler above sees webrtcbin's DTLS
    # elements as they are created (linking requests the pad that creates the transport).
    whip = Gst.ElementFactory.make("whipsink", "whip")
    whip.set_property("whip-endpoint", url)
    whip.set_property("auth-token", key)
    pipe.add(whip)
    assert pipe.get_by_name("rtpcaps").link(whip)
    loop = GLib.MainLoop()
    result = {"ok": True}

    def on_msg(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"publish.py: ERROR {err.message} ({dbg})", flush=True)
            result["ok"] = False
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_msg)

    def report_dtls():
        it = pipe.iterate_recurse()
        for el in _iter(it):
            f = el.get_factory()
            if f is not None and f.get_name() == "webrtcbin":
                for name in ("connection-state", "ice-connection-state"):
                    print(f"publish.py: webrtcbin {name} = {el.get_property(name).value_nick}", flush=True)
                for t in [el.emit("get-transceiver", 0)]:
                    if t is not None and t.props.sender is not None:
                        tr = t.props.sender.props.transport
                        print(f"publish.py: dtls state={tr.props.state.value_nick} client={tr.props.client}", flush=True)
                        rc = tr.props.remote_certificate
                        if rc:
                            open("remote-cert.pem", "w").write(rc)
                        lc = tr.props.certificate
                        if lc:
                            open("local-cert.pem", "w").write(lc)
        return False

    def stop():
        report_dtls()
        pipe.send_event(Gst.Event.new_eos())
        GLib.timeout_add(3000, loop.quit)
        return False

    pipe.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int(secs * 1000), stop)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    sys.exit(0 if result["ok"] else 1)


def _iter(it):
    while True:
        res, el = it.next()
        if res == Gst.IteratorResult.OK:
            yield el
        elif res == Gst.IteratorResult.RESYNC:
            it.resync()
        else:
            return


if __name__ == "__main__":
    main()
