// A dedicated worker that ticks at the compositor's frame rate. Timers in a worker keep
// their pace when the studio tab is in the background, where the page's own timers and
// requestAnimationFrame are throttled (which would freeze the outgoing video).
let timer = null;
self.onmessage = (ev) => {
  clearInterval(timer);
  timer = null;
  const fps = Number(ev.data?.fps);
  if (fps > 0) timer = setInterval(() => self.postMessage(0), 1000 / fps);
};
