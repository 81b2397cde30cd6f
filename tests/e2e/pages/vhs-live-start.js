// Where video.js (VHS 3.17.5) starts a live LL-HLS stream, for any page embedding it:
//   videojs(el, { html5: { vhs: { customTagMappers: [vhsLiveStart()] } } })
//
// VHS takes the open segment (parts, no URI yet) to last a whole EXT-X-TARGETDURATION and
// starts PART-HOLD-BACK before that end: with 2 s segments, 1.34 s into the open segment,
// whatever it holds — mid-GOP, where Chromium drops the video of the parts before the
// next keyframe and, seeking meanwhile, of later ones too (a stall ~3 s on, when its
// audio-only playback gives up), or past the newest part. VHS also never requests the
// EXT-X-PRELOAD-HINT part, so a part reaches it one playlist reload after other players.
// This mapper adds an EXT-X-START, which VHS counts from that same end, at the newest
// INDEPENDENT=YES part starting at least PART-HOLD-BACK + PART-TARGET before the
// playlist's real end (RFC 8216bis §6.3.3: no closer than PART-HOLD-BACK; the extra part
// is the reload VHS waits for).

/** A VHS `customTagMappers` entry; stateful over one playlist's lines (reset by #EXTM3U). */
export function vhsLiveStart() {
  let s;
  const attr = (line, name) => {
    const m = new RegExp(`[:,]${name}=([^,]*)`).exec(line);
    return m ? m[1] : null;
  };
  return {
    expression: /^#EXT/,
    map(line) {
      if (line.startsWith('#EXTM3U')) {
        // t: the start of the segment being listed; at: its parts' end.
        s = { target: 0, holdBack: 0, partTarget: 0, t: 0, at: 0, open: 0, keyframes: [] };
      } else if (!s) {
        return line;
      } else if (line.startsWith('#EXT-X-TARGETDURATION:')) {
        s.target = Number(line.split(':')[1]);
      } else if (line.startsWith('#EXT-X-SERVER-CONTROL:')) {
        s.holdBack = Number(attr(line, 'PART-HOLD-BACK') ?? 0);
      } else if (line.startsWith('#EXT-X-PART-INF:')) {
        s.partTarget = Number(attr(line, 'PART-TARGET') ?? 0);
      } else if (line.startsWith('#EXT-X-PART:')) {
        if (attr(line, 'INDEPENDENT') === 'YES') s.keyframes.push(s.t + s.at);
        s.at += Number(attr(line, 'DURATION') ?? 0);
        s.open += 1;
      } else if (line.startsWith('#EXTINF:')) {
        s.t += Number(line.slice(8).split(',')[0]);
        s.at = 0;
        s.open = 0;
      } else if (line.startsWith('#EXT-X-PRELOAD-HINT:') && s.holdBack > 0) {
        const end = s.t + s.at;
        // VHS's end: the open segment counted whole once it lists a part.
        const vhsEnd = s.t + (s.open > 0 ? s.target : 0);
        const latest = end - s.holdBack - s.partTarget;
        const start = s.keyframes.filter((k) => k <= latest + 1e-6).pop();
        s = null;
        // A negative offset only: VHS reads a positive one from the playlist's start.
        if (start !== undefined && start - vhsEnd < 0) return `#EXT-X-START:TIME-OFFSET=${(start - vhsEnd).toFixed(3)}`;
      }
      return line;
    },
  };
}
