#!/usr/bin/python3
"""A WHIP publisher built on GStreamer's webrtcbin: an RSA-certificate WebRTC stack.

GStreamer 1.22 always generates an RSA-2048 DTLS certificate, so this is the peer that
str0m's own DTLS (ECDSA only) could not accept. It speaks WHIP itself (POST the offer,
apply the answer) so no Rust GStreamer plugin has to be built.

Usage: whip_publish.py <whip url> <stream key> <seconds>
Prints "connected" once ICE and DTLS are up; exits 0 after <seconds>, 1 on failure.
"""
import subprocess
import sys
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = """
webrtcbin name=pc bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1
  ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600
  ! video/x-h264,profile=constrained-baseline
  ! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=102
  ! application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000
  ! pc.
audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc
  ! rtpopuspay pt=111
  ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000
  ! pc.
"""


def main():
    url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    Gst.init(None)
    pipe = Gst.parse_launch(PIPELINE)
    pc = pipe.get_by_name("pc")
    loop = GLib.MainLoop()
    state = {"code": 1}

    def fail(msg):
        print(f"error: {msg}", flush=True)
        loop.quit()

    def send_offer():
        # Candidates are gathered: the offer carries them all (WHIP without trickle).
        offer = pc.get_property("local-description").sdp.as_text()
        req = urllib.request.Request(
            url,
            data=offer.encode(),
            method="POST",
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer_text = resp.read().decode()
                if resp.status != 201:
                    return fail(f"WHIP answered {resp.status}")
        except Exception as e:  # noqa: BLE001 - any failure ends the run with its reason
            return fail(f"WHIP POST failed: {e}")
        res, sdp = GstSdp.SDPMessage.new_from_text(answer_text)
        if res != GstSdp.SDPResult.OK:
            return fail("unparsable SDP answer")
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        pc.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    def on_gathering(pc_, _pspec):
        if pc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(send_offer)

    def on_connection(pc_, _pspec):
        st = pc.get_property("connection-state")
        if st == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            print(f"connected; our certificate's key: {certificate_key()}", flush=True)
            state["code"] = 0
            GLib.timeout_add(int(seconds * 1000), loop.quit)
        elif st == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            state["code"] = 1
            fail("peer connection failed (ICE or DTLS)")

    def certificate_key():
        # The test checks it: the point of this peer is its RSA certificate.
        try:
            sender = pc.emit("get-transceiver", 0).get_property("sender")
            pem = sender.get_property("transport").get_property("certificate")
            text = subprocess.run(
                ["openssl", "x509", "-noout", "-text"],
                input=pem.encode(), capture_output=True, timeout=5, check=True,
            ).stdout.decode()
            for line in text.splitlines():
                if "Public Key Algorithm" in line:
                    return line.split(":", 1)[1].strip()
        except Exception as e:  # noqa: BLE001 - informational only
            return f"unknown ({e})"
        return "unknown"

    def on_offer(promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        pc.emit("set-local-description", offer, Gst.Promise.new())

    def on_negotiation_needed(_pc):
        pc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    def on_bus(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            state["code"] = 1
            fail(f"{err.message} ({dbg})")
        return True

    pc.connect("on-negotiation-needed", on_negotiation_needed)
    pc.connect("notify::ice-gathering-state", on_gathering)
    pc.connect("notify::connection-state", on_connection)
    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_bus)
    # Give up if nothing connects: the test reads the reason from stdout.
    GLib.timeout_add(20_000 + int(seconds * 1000), lambda: fail("timed out") or False)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    sys.exit(state["code"])


if __name__ == "__main__":
    main()
