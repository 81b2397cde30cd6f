// Keeps video.js (VHS 3.17.5, the newest release) from appending an init segment twice, for
// any page embedding it:  const player = videojs(el, …); vhsInitOnce(player); player.src(…)
//
// VHS re-appends the init segment whenever the playlist object of the segment it appends
// is not the one it last appended an init with (`updateAppendInitSegmentStatus`, meant for
// a rendition switch) — and every live reload of the same rendition is a new object. Right
// after an init append (the first part, or the part after EXT-X-MAP changes) it has also
// just forgotten which init is active, so if a reload landed meanwhile (the new init's own
// fetch makes that likely), the next part goes in behind the same init again. MSE's
// "initialization segment received" sets "need random access point" on every track: the
// browser then drops that part's video and every later frame up to the next keyframe,
// while audio plays on — the buffer stops growing for up to a GOP, and video.js stalled.
// Seen in the MSE trace of 'whip-rescale videojs' (README "Design notes"). This treats a
// reload of the same rendition (same playlist id) as the same playlist; a rendition
// switch, a timeline change or a reset still re-append as VHS intends.

/** Patches the VHS segment loaders of `player` (a video.js player) once VHS is set up. */
export function vhsInitOnce(player) {
  player.on('xhr-hooks-ready', () =>
    // VHS creates its loaders just after this event, in the same task.
    queueMicrotask(() => {
      const loader = player.tech({ IWillNotUseThisInPlugins: true })?.vhs?.playlistController_?.mainSegmentLoader_;
      const proto = loader && Object.getPrototypeOf(loader);
      if (!proto || typeof proto.updateAppendInitSegmentStatus !== 'function') {
        console.warn('vhsInitOnce: VHS internals changed; not patched');
        return;
      }
      if (proto.updateAppendInitSegmentStatus.vhsInitOnce) return;
      const original = proto.updateAppendInitSegmentStatus;
      const patched = function (segmentInfo, type) {
        const last = this.playlistOfLastInitSegment_?.[type];
        const next = segmentInfo?.playlist;
        if (last && next && last !== next && last.id !== undefined && last.id === next.id) {
          this.playlistOfLastInitSegment_[type] = next;
        }
        return original.call(this, segmentInfo, type);
      };
      patched.vhsInitOnce = true;
      proto.updateAppendInitSegmentStatus = patched;
    }),
  );
}
