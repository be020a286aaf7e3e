// Live playback of a room in a <video>: HTTP-FLV through mpegts.js (low latency), or HLS.
// Also the audio level meter (WebAudio) the console shows and the browser tests and the
// latency benchmark read.

/* global mpegts */

// Low latency: no stash buffer, no lazy loading; the buffer in the media element is chased
// back to ~0.3-0.5 s by playing faster (liveSync) and, when far behind, by jumping.
export const FLV_CONFIG = {
  isLive: true,
  enableWorker: false,
  enableStashBuffer: false,
  stashInitialSize: 64 * 1024,
  lazyLoad: false,
  autoCleanupSourceBuffer: true,
  autoCleanupMaxBackwardDuration: 20,
  autoCleanupMinBackwardDuration: 10,
  liveBufferLatencyChasing: true,
  liveBufferLatencyMaxLatency: 1.2,
  liveBufferLatencyMinRemain: 0.25,
  liveSync: true,
  liveSyncMaxLatency: 0.6,
  liveSyncTargetLatency: 0.35,
  liveSyncPlaybackRate: 1.15,
};

export function flvSupported() {
  return typeof mpegts !== "undefined" && mpegts.getFeatureList().mseLivePlayback;
}

export function hlsSupported(video) {
  return video.canPlayType("application/vnd.apple.mpegurl") !== "";
}

export class LivePlayer {
  constructor(video, { onState } = {}) {
    this.video = video;
    this.onState = onState || (() => {});
    this.player = null;
    this.route = null;
    this.url = null;
    this.retryTimer = null;
    this.watchTimer = null;
    this.lastTime = 0;
    this.lastAdvance = 0;
    this.reconnects = 0;
    this.failures = 0;  // retries since the picture last advanced: the next one waits longer
    this.clock = null;  // the relay's onMtlClock: {offset_ms, first_ms} (HTTP-FLV only)
  }

  /** Start (or switch to) a route: "flv" or "hls". */
  play(route, url) {
    this.stop();
    this.route = route;
    this.url = url;
    this.lastAdvance = performance.now();
    if (route === "flv") {
      if (!flvSupported()) {
        this.onState("error", typeof mpegts === "undefined"
          ? "The HTTP-FLV player (mpegts.js) is missing: run `make` to vendor it."
          : "This browser has no Media Source Extensions for HTTP-FLV: use HLS.");
        return;
      }
      this.player = mpegts.createPlayer({ type: "flv", isLive: true, url, hasAudio: true, hasVideo: true }, FLV_CONFIG);
      this.player.attachMediaElement(this.video);
      this.player.on(mpegts.Events.ERROR, (type, detail) => this._retry(`${type}: ${detail}`));
      this.player.on(mpegts.Events.LOADING_COMPLETE, () => this._retry("the stream ended"));
      // The relay says how its timeline maps to the publisher's stream clock (core/flvrelay.py).
      this.player.on(mpegts.Events.SCRIPTDATA_ARRIVED, (data) => {
        if (data && data.onMtlClock) this.clock = data.onMtlClock;
      });
      this.player.load();
    } else {
      if (!hlsSupported(this.video)) {
        this.onState("error", "This browser cannot play HLS by itself: use HTTP-FLV.");
        return;
      }
      // HLS comes from the media server, another origin: without CORS mode the page's WebAudio
      // meter would only get silence (nginx sends Access-Control-Allow-Origin: *).
      this.video.crossOrigin = "anonymous";
      this.video.src = url;
    }
    this._start();
    // A stream that stops advancing (publisher restarted, network cut) is reconnected.
    this.watchTimer = setInterval(() => this._watch(), 1000);
  }

  _start() {
    const p = this.video.play();
    if (p && p.catch) {
      p.catch((err) => {
        if (err && err.name === "NotAllowedError") {
          // No user gesture yet: start muted, the page offers to unmute.
          this.video.muted = true;
          this.video.play().catch(() => {});
          this.onState("muted", "Muted by the browser until you click the video.");
        }
      });
    }
    this.onState("connecting", "connecting…");
  }

  _watch() {
    const t = this.video.currentTime;
    const now = performance.now();
    if (t > this.lastTime + 0.01) {
      this.lastTime = t;
      this.lastAdvance = now;
      this.failures = 0;
      this.onState("playing", "");
    } else if (now - this.lastAdvance > (this.route === "hls" ? 15000 : 6000) && this.url) {
      this._retry("the picture stopped");
    }
    if (this.route === "hls" && this.video.buffered.length) {
      // Native HLS has no latency control: stay near the live edge.
      const end = this.video.buffered.end(this.video.buffered.length - 1);
      if (end - t > 8) this.video.currentTime = end - 3;
    }
  }

  _retry(why) {
    if (this.retryTimer || !this.url) return;
    const { route, url } = this;
    this.onState("reconnecting", `reconnecting (${why})…`);
    this.reconnects += 1;
    this.failures += 1;
    // 1 s, then longer while the room stays away (closed, or its publisher restarting), at most 8 s.
    const delay = Math.min(8000, 1000 * 2 ** Math.max(0, this.failures - 2));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.play(route, url);
    }, delay);
  }

  /** The publisher's stream time (s) of the picture shown now, or null (HLS, or the relay has not said).
   *  mpegts.js starts currentTime at the first media tag it was sent (`first_ms` on the relay's timeline). */
  streamTime() {
    if (!this.clock || this.route !== "flv" || !this.video.currentTime) return null;
    return (this.video.currentTime * 1000 + this.clock.first_ms - this.clock.offset_ms) / 1000;
  }

  /** Seconds of media buffered ahead of what plays (the player's share of the latency). */
  bufferAhead() {
    const b = this.video.buffered;
    return b.length ? Math.max(0, b.end(b.length - 1) - this.video.currentTime) : 0;
  }

  stop() {
    clearTimeout(this.retryTimer);
    clearInterval(this.watchTimer);
    this.retryTimer = null;
    this.watchTimer = null;
    if (this.player) {
      try {
        this.player.pause();
        this.player.unload();
        this.player.detachMediaElement();
        this.player.destroy();
      } catch (e) { /* already torn down */ }
      this.player = null;
    }
    if (this.route === "hls") {
      this.video.removeAttribute("src");
      this.video.load();
    }
    this.route = null;
    this.url = null;
    this.lastTime = 0;
    this.clock = null;
  }
}

/** How far behind the room the viewer is: the time from the publisher sending a frame to the player
 *  showing it. The publisher's send times come from the room's feed: `session_start` (t0, less its
 *  lead), and every event with a `stream_ts` (speech_start/end, the once-a-second `clock`) or mouth
 *  frames, each sent as the publisher reached that stream time (`t`). A frame's send time is read
 *  from the latest such anchor at or before it (a publisher that fell behind and catches up runs
 *  faster than the wall clock between anchors). Each speech_start also gets its own figure once the
 *  player shows it. The server's clock is read through the feed: the smallest (arrival - event
 *  time) of the last minute is the clock difference, so pages on other hosts measure right too. */
export class StreamLag {
  constructor(player) {
    this.player = player;
    this.session = null;  // t0 of the publisher session the anchors belong to
    this.anchors = [];  // {s: stream s, t: server s}, ascending s
    this.skews = [];  // [arrival ms, arrival - event ms]
    this.pending = [];  // speech starts not yet shown
    this.heard = [];  // {utterance, s, t, lag_s, at}
  }

  /** A room event, from the feed (`arrivedMs` set) or the events list. */
  note(e, arrivedMs) {
    if (typeof e.t !== "number") return;
    if (arrivedMs !== undefined) {
      this.skews.push([arrivedMs, arrivedMs - e.t * 1000]);
      while (this.skews.length && this.skews[0][0] < arrivedMs - 60000) this.skews.shift();
    }
    if (e.event === "session_start" && typeof e.t0 === "number") {
      if (this.session === null || e.t0 > this.session) {  // a newer publisher session: its clock starts at 0
        this.session = e.t0;
        this.anchors = [{ s: 0, t: e.t0 - (e.lead_s || 0) }];
        this.pending = [];
      }
      return;
    }
    if (this.session !== null && e.t < this.session) return;  // an earlier session's
    const s = typeof e.stream_ts === "number" ? e.stream_ts
      : (e.event === "mouth" && e.frames && e.frames.length ? e.frames[0].t : null);
    if (typeof s !== "number") return;
    this._anchor(s, e.t);
    if (e.event === "speech_start" && arrivedMs !== undefined && !this.pending.some((p) => p.s === s)) {
      this.pending.push({ s, t: e.t, utterance: e.utterance });
    }
  }

  _anchor(s, t) {
    if (this.anchors.some((a) => a.s === s)) return;
    this.anchors.push({ s, t });
    this.anchors.sort((a, b) => a.s - b.s);
    if (this.anchors.length > 400) this.anchors.splice(0, this.anchors.length - 400);
  }

  skewMs() {
    return this.skews.length ? Math.min(...this.skews.map((x) => x[1])) : 0;
  }

  /** When the publisher sent stream time `pos` (server clock, s), or null. */
  sentAt(pos) {
    let best = null;
    for (const a of this.anchors) if (a.s <= pos + 1e-6) best = a;
    best = best || this.anchors[0];
    return best ? best.t + (pos - best.s) : null;
  }

  /** Seconds between the publisher sending what the player shows now and now; null if unknown. */
  lag() {
    const pos = this.player.streamTime();
    const sent = pos === null ? null : this.sentAt(pos);
    if (sent === null) return null;
    const lag = (Date.now() - this.skewMs()) / 1000 - sent;
    return lag > -1 && lag < 120 ? lag : null;
  }

  /** Called often (10 Hz): a pending speech start the player has reached gets its figure. */
  tick() {
    const pos = this.player.streamTime();
    if (pos === null) return;
    const now = (Date.now() - this.skewMs()) / 1000;
    for (const p of this.pending.filter((x) => pos >= x.s)) {
      // Corrected for how far past its start the picture already is.
      this.heard.push({ utterance: p.utterance, s: p.s, t: p.t, lag_s: now - p.t - (pos - p.s), at: Date.now() });
    }
    this.pending = this.pending.filter((x) => pos < x.s);
    if (this.heard.length > 50) this.heard.splice(0, this.heard.length - 50);
  }

  reset() {
    this.session = null;
    this.anchors = [];
    this.pending = [];
  }
}

/** RMS level of what a media element plays, sampled every 10 ms through WebAudio. */
export class AudioMeter {
  constructor(media) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    this.ctx = new Ctx({ latencyHint: "interactive" });
    this.source = this.ctx.createMediaElementSource(media);
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 512;  // ~12 ms at 44.1 kHz
    this.source.connect(this.analyser);
    this.analyser.connect(this.ctx.destination);
    this.buf = new Float32Array(this.analyser.fftSize);
    this.level = 0;
    this.history = [];  // [wall ms, rms], the last 60 s
    this.timer = setInterval(() => this.sample(), 10);
  }

  resume() {
    if (this.ctx.state !== "running") this.ctx.resume().catch(() => {});
  }

  sample() {
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (let i = 0; i < this.buf.length; i++) sum += this.buf[i] * this.buf[i];
    this.level = Math.sqrt(sum / this.buf.length);
    const now = Date.now();
    this.history.push([now, this.level]);
    if (this.history.length > 6000) this.history.splice(0, this.history.length - 6000);
  }

  /** Wall time (ms) of the first sample above `threshold` at or after `since` (ms), or null. */
  firstAbove(threshold, since) {
    for (const [t, rms] of this.history) if (t >= since && rms > threshold) return t;
    return null;
  }

  /** Highest level since `since` (ms). */
  maxSince(since) {
    let m = 0;
    for (const [t, rms] of this.history) if (t >= since && rms > m) m = rms;
    return m;
  }
}
