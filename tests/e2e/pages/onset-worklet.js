// AudioWorklet processor for the lip-sync bench (avsync-sink.html): posts the context
// frame of each onset, the first sample above THRESHOLD after QUIET_S of quiet. The
// beeps are 0.5 full scale; between them the source sends digital silence.
const THRESHOLD = 0.1;
const QUIET_S = 0.3;

class Onset extends AudioWorkletProcessor {
  constructor() {
    super();
    this.quiet = Infinity; // frames since the last loud sample
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    const quietFrames = QUIET_S * sampleRate;
    for (let i = 0; i < channel.length; i++) {
      if (Math.abs(channel[i]) > THRESHOLD) {
        if (this.quiet >= quietFrames) this.port.postMessage({ frame: currentFrame + i });
        this.quiet = 0;
      } else {
        this.quiet++;
      }
    }
    return true;
  }
}

registerProcessor('onset', Onset);
