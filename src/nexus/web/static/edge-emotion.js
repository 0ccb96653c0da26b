/*
 * NEXUS edge emotion: the edge tier of the emotion engine, in the browser or in Node.
 *
 * Load the JSON artifact served at /v1/emotion/edge-model, then call analyze(text). The
 * arithmetic mirrors nexus/emotion/models/edge.py and vector.py exactly (the Python test
 * suite runs this file under Node and compares outputs): same tokenizer, same FNV-1a and
 * fmix32 hashing, same int8 weights, same thresholds.
 */
(function (root) {
  "use strict";

  var WORD = "0-9a-z'\\u00c0-\\u00d6\\u00d8-\\u00f6\\u00f8-\\u024f";
  var SPACE = "\\t\\n\\u000b\\u000c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff";
  var TOKEN = new RegExp("[" + WORD + "]+|[^" + WORD + SPACE + "]", "gu");

  function fold(text) {
    var out = "";
    for (var ch of text) {
      var code = ch.codePointAt(0);
      if ((code >= 65 && code <= 90) || (code >= 0xc0 && code <= 0xde && code !== 0xd7)) {
        out += String.fromCodePoint(code + 32);
      } else {
        out += ch;
      }
    }
    return out;
  }

  function tokenize(text) {
    return fold(text).match(TOKEN) || [];
  }

  // UTF-8 bytes of each code point; a lone surrogate is encoded as its three bytes, as
  // Python's "surrogatepass" does, so both sides hash the same bytes.
  function fnv1a(token) {
    var h = 0x811c9dc5;
    function add(b) { h = Math.imul(h ^ b, 0x01000193) >>> 0; }
    for (var ch of token) {
      var c = ch.codePointAt(0);
      if (c < 0x80) { add(c); }
      else if (c < 0x800) { add(0xc0 | (c >> 6)); add(0x80 | (c & 63)); }
      else if (c < 0x10000) { add(0xe0 | (c >> 12)); add(0x80 | ((c >> 6) & 63)); add(0x80 | (c & 63)); }
      else {
        add(0xf0 | (c >> 18)); add(0x80 | ((c >> 12) & 63));
        add(0x80 | ((c >> 6) & 63)); add(0x80 | (c & 63));
      }
    }
    return h >>> 0;
  }

  function fmix32(h) {
    h = (h ^ (h >>> 16)) >>> 0;
    h = Math.imul(h, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    return (h ^ (h >>> 16)) >>> 0;
  }

  function features(text, bits) {
    var mask = bits >= 32 ? 0xffffffff : (1 << bits) - 1;
    var hashes = tokenize(text).map(fnv1a);
    var seen = new Set();
    for (var i = 0; i < hashes.length; i++) {
      seen.add((fmix32(hashes[i]) & mask) >>> 0);
      if (i + 1 < hashes.length) {
        var mixed = (Math.imul(hashes[i], 0x9e3779b1) ^ hashes[i + 1] ^ 0x5bd1e995) >>> 0;
        seen.add((fmix32(mixed) & mask) >>> 0);
      }
    }
    return Array.from(seen).sort(function (a, b) { return a - b; });
  }

  function decodeBase64(text) {
    if (typeof Buffer !== "undefined") {
      var buf = Buffer.from(text, "base64");
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
    }
    var raw = atob(text);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sigmoid(x) { return 0.5 * (1 + Math.tanh(0.5 * x)); }

  function EdgeModel(artifact) {
    if (artifact.format !== "nexus-edge-emotion") throw new Error("not a nexus-edge-emotion artifact");
    this.version = artifact.version;
    this.bits = artifact.bits;
    this.outputs = artifact.outputs;
    this.bias = artifact.bias;
    this.scales = artifact.scales;
    this.thresholds = artifact.thresholds;
    this.taxonomy = artifact.taxonomy;
    var deltas = decodeBase64(artifact.features);
    var view = new DataView(deltas.buffer, deltas.byteOffset, deltas.byteLength);
    this.rowOf = new Map();
    var feature = 0;
    for (var i = 0; i < deltas.byteLength / 4; i++) {
      feature += view.getUint32(i * 4, true);
      this.rowOf.set(feature, i);
    }
    var w = decodeBase64(artifact.weights);
    this.weights = new Int8Array(w.buffer, w.byteOffset, w.byteLength);
  }

  EdgeModel.prototype.scores = function (text) {
    var ids = features(text, this.bits);
    var k = this.outputs.length;
    var out = new Float64Array(k);
    for (var i = 0; i < ids.length; i++) {
      var row = this.rowOf.get(ids[i]);
      if (row === undefined) continue;
      for (var j = 0; j < k; j++) out[j] += this.weights[row * k + j] * this.scales[j];
    }
    var norm = ids.length ? 1 / Math.sqrt(ids.length) : 0;
    for (var m = 0; m < k; m++) out[m] = out[m] * norm + this.bias[m];
    return out;
  };

  function pick(probs, thresholds, names) {
    var chosen = [];
    for (var i = 0; i < probs.length; i++) if (probs[i] >= thresholds[i]) chosen.push(i);
    if (!chosen.length) {
      var best = 0;
      for (var j = 1; j < probs.length; j++) if (probs[j] > probs[best]) best = j;
      chosen.push(best);
    }
    chosen.sort(function (a, b) { return probs[b] - probs[a] || a - b; });
    return chosen.map(function (i) { return names[i]; });
  }

  EdgeModel.prototype.analyze = function (text) {
    var t = this.taxonomy;
    var s = this.scores(text);
    var nl = t.goemotions.length, ne = t.ekman.length;
    var labels = {}, ekman = {}, plutchik = {}, probs = [], eprobs = [];
    for (var i = 0; i < nl; i++) { probs.push(sigmoid(s[i])); labels[t.goemotions[i]] = probs[i]; }
    for (var e = 0; e < ne; e++) { eprobs.push(sigmoid(s[nl + e])); ekman[t.ekman[e]] = eprobs[e]; }
    for (var p = 0; p < t.plutchik.length; p++) {
      var logAbsent = 0;
      for (var l = 0; l < nl; l++) {
        var x = Math.min(Math.max(probs[l] * t.plutchik_weights[l][p], 0), 1 - 1e-12);
        logAbsent += Math.log1p(-x);
      }
      plutchik[t.plutchik[p]] = 1 - Math.exp(logAbsent);
    }
    var confidence = 1;
    for (var c = 0; c < ne; c++) {
      confidence *= eprobs[c] >= this.thresholds.ekman[c] ? eprobs[c] : 1 - eprobs[c];
    }
    function vad(v) { return Math.min(1, Math.max(-1, (v - 3) / 2)); }
    var predicted = pick(probs, this.thresholds.goemotions, t.goemotions);
    return {
      plutchik: plutchik,
      valence: vad(s[nl + ne]),
      arousal: vad(s[nl + ne + 1]),
      dominance: vad(s[nl + ne + 2]),
      labels: labels,
      predicted: predicted,
      ekman: ekman,
      ekman_predicted: pick(eprobs, this.thresholds.ekman, t.ekman),
      dominant: predicted[0],
      confidence: confidence,
      tier: "edge",
    };
  };

  var api = { EdgeModel: EdgeModel, tokenize: tokenize, features: features, fnv1a: fnv1a };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.NexusEdgeEmotion = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
