// Composites the studio's sources on a canvas — screen with a camera inset
// (picture-in-picture), camera only, or screen only — at a chosen size and frame rate.
// The canvas' captured track is what the studio publishes, so changing layout, sources,
// inset or size never touches the WebRTC session.

/** Where the inset sits when it hugs a corner, as a fraction of the canvas size. */
const MARGIN = 0.025;

export const LAYOUTS = ['pip', 'camera', 'screen'];
export const CORNERS = ['top-left', 'top-right', 'bottom-left', 'bottom-right'];

export class Compositor {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas, { width = 1280, height = 720, fps = 30 } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.camera = null; // HTMLVideoElement
    this.screen = null;
    this.cameraHidden = false;
    this.layout = 'pip';
    /** Inset: width as a fraction of the canvas width; position of its top-left corner as fractions (null = at `corner`). */
    this.inset = { corner: 'bottom-right', size: 0.25, x: null, y: null };
    this.frames = 0;
    this.track = null;
    this.worker = null;
    this.timer = null;
    this.running = false;
    this.setSize(width, height);
    this.fps = fps;
  }

  setSize(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.draw();
  }

  /** Starts painting at `fps` (the preview runs before and while live). */
  run() {
    this.running = true;
    this.setFps(this.fps);
  }

  /** The canvas' video track, created on first use: what the studio publishes. */
  captureTrack() {
    if (!this.track || this.track.readyState === 'ended') {
      // No frame rate argument: a frame is captured each time the canvas is painted,
      // so the ticker alone sets the rate (and can change it while live).
      this.track = this.canvas.captureStream().getVideoTracks()[0];
    }
    if (!this.running) this.run();
    return this.track;
  }

  setFps(fps) {
    this.fps = fps;
    if (!this.running) return;
    if (!this.worker && !this.timer && typeof Worker === 'function') {
      try {
        this.worker = new Worker(new URL('./ticker.js', import.meta.url));
        this.worker.onmessage = () => {
          try {
            this.draw();
          } finally {
            // The ticker sends the next tick only after this (ticker.js).
            this.worker?.postMessage({ painted: true });
          }
        };
      } catch {
        this.worker = null;
      }
    }
    if (this.worker) {
      this.worker.postMessage({ fps });
    } else {
      clearInterval(this.timer);
      this.timer = setInterval(() => this.draw(), 1000 / fps);
    }
  }

  /** Stops painting and ends the canvas track. */
  stop() {
    this.running = false;
    this.worker?.terminate();
    this.worker = null;
    clearInterval(this.timer);
    this.timer = null;
    this.track?.stop();
    this.track = null;
    this.draw();
  }

  setCorner(corner) {
    this.inset.corner = corner;
    this.inset.x = null;
    this.inset.y = null;
    this.draw();
  }

  setInsetSize(fraction) {
    this.inset.size = Math.min(0.6, Math.max(0.1, fraction));
    this.clampInset();
    this.draw();
  }

  /** Whether the inset is drawn at all (layout pip with a visible camera and a screen). */
  insetShown() {
    return this.layout === 'pip' && this.hasCamera() && this.hasScreen();
  }

  hasCamera() {
    return !!this.camera && !this.cameraHidden && this.camera.readyState >= 2 && this.camera.videoWidth > 0;
  }

  hasScreen() {
    return !!this.screen && this.screen.readyState >= 2 && this.screen.videoWidth > 0;
  }

  /** The inset's rectangle in canvas pixels. */
  insetRect() {
    const W = this.canvas.width;
    const H = this.canvas.height;
    const w = Math.round(W * this.inset.size);
    const aspect = this.camera?.videoWidth ? this.camera.videoHeight / this.camera.videoWidth : 9 / 16;
    const h = Math.round(w * aspect);
    let x;
    let y;
    if (this.inset.x !== null) {
      x = Math.round(this.inset.x * W);
      y = Math.round(this.inset.y * H);
    } else {
      const mx = Math.round(W * MARGIN);
      const my = Math.round(H * MARGIN * (W / H));
      x = this.inset.corner.endsWith('left') ? mx : W - w - mx;
      y = this.inset.corner.startsWith('top') ? my : H - h - my;
    }
    return { x: Math.max(0, Math.min(W - w, x)), y: Math.max(0, Math.min(H - h, y)), w, h };
  }

  clampInset() {
    if (this.inset.x === null) return;
    const r = this.insetRect();
    this.inset.x = r.x / this.canvas.width;
    this.inset.y = r.y / this.canvas.height;
  }

  /** Moves the inset's top-left corner to canvas pixels (x, y), kept inside the frame. */
  moveInset(x, y) {
    const r = this.insetRect();
    const W = this.canvas.width;
    const H = this.canvas.height;
    this.inset.x = Math.max(0, Math.min(W - r.w, x)) / W;
    this.inset.y = Math.max(0, Math.min(H - r.h, y)) / H;
    this.draw();
  }

  /** Snaps a dragged inset to the nearest corner; returns that corner. */
  nearestCorner() {
    const r = this.insetRect();
    const cx = r.x + r.w / 2;
    const cy = r.y + r.h / 2;
    const v = cy < this.canvas.height / 2 ? 'top' : 'bottom';
    const h = cx < this.canvas.width / 2 ? 'left' : 'right';
    return `${v}-${h}`;
  }

  /** Paints one frame. */
  draw() {
    const { ctx } = this;
    const W = this.canvas.width;
    const H = this.canvas.height;
    ctx.fillStyle = '#0b0f19';
    ctx.fillRect(0, 0, W, H);
    const cam = this.hasCamera();
    const scr = this.hasScreen();
    if (this.layout === 'camera') {
      if (cam) drawFit(ctx, this.camera, 0, 0, W, H, 'contain');
      else this.placeholder(this.cameraHidden ? 'Camera hidden' : 'No camera');
    } else if (this.layout === 'screen') {
      if (scr) drawFit(ctx, this.screen, 0, 0, W, H, 'contain');
      else this.placeholder('No screen shared');
    } else {
      // Picture-in-picture: the screen fills the frame, the camera sits in the inset. With
      // only one of them, that one fills the frame.
      if (scr) drawFit(ctx, this.screen, 0, 0, W, H, 'contain');
      else if (cam) drawFit(ctx, this.camera, 0, 0, W, H, 'contain');
      else this.placeholder('No camera or screen');
      if (scr && cam) {
        const r = this.insetRect();
        const radius = Math.round(r.w * 0.04);
        ctx.save();
        ctx.shadowColor = 'rgba(0,0,0,0.5)';
        ctx.shadowBlur = Math.round(W * 0.01);
        roundRect(ctx, r.x, r.y, r.w, r.h, radius);
        ctx.fillStyle = '#000';
        ctx.fill();
        ctx.restore();
        ctx.save();
        roundRect(ctx, r.x, r.y, r.w, r.h, radius);
        ctx.clip();
        drawFit(ctx, this.camera, r.x, r.y, r.w, r.h, 'cover');
        ctx.restore();
        ctx.save();
        roundRect(ctx, r.x, r.y, r.w, r.h, radius);
        ctx.lineWidth = Math.max(2, Math.round(W / 640));
        ctx.strokeStyle = 'rgba(255,255,255,0.85)';
        ctx.stroke();
        ctx.restore();
      }
    }
    this.frames += 1;
  }

  placeholder(text) {
    const { ctx } = this;
    const W = this.canvas.width;
    const H = this.canvas.height;
    ctx.fillStyle = '#8b93a7';
    ctx.font = `${Math.round(H / 18)}px system-ui, sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, W / 2, H / 2);
  }
}

/** Draws a video into a box, letterboxed ('contain') or cropped ('cover'). */
function drawFit(ctx, video, x, y, w, h, fit) {
  const vw = video.videoWidth;
  const vh = video.videoHeight;
  if (!vw || !vh) return;
  const scale = fit === 'cover' ? Math.max(w / vw, h / vh) : Math.min(w / vw, h / vh);
  const dw = vw * scale;
  const dh = vh * scale;
  try {
    ctx.drawImage(video, x + (w - dw) / 2, y + (h - dh) / 2, dw, dh);
  } catch {
    /* the source went away between the check and the draw: skip this frame */
  }
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  if (typeof ctx.roundRect === 'function') {
    ctx.roundRect(x, y, w, h, r);
  } else {
    ctx.rect(x, y, w, h);
  }
}
