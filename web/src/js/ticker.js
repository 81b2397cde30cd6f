// A dedicated worker that ticks at the compositor's frame rate. Timers in a worker keep
// their pace when the studio tab is in the background, where the page's own timers and
// requestAnimationFrame are throttled (which would freeze the outgoing video).
// One tick in flight at a time: the page answers {painted: true} after each paint, and
// a tick that falls due before that is skipped. Otherwise a page slower than the frame
// rate (a starved CPU) gets ticks queued without end, and its clicks and rendering wait
// behind them.
let timer = null;
let inFlight = false;
self.onmessage = (ev) => {
  if (ev.data?.painted) {
    inFlight = false;
    return;
  }
  clearInterval(timer);
  timer = null;
  const fps = Number(ev.data?.fps);
  if (fps > 0) {
    timer = setInterval(() => {
      if (inFlight) return;
      inFlight = true;
      self.postMessage(0);
    }, 1000 / fps);
  }
};
