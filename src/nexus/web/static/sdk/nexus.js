/*
 * nexus.js: the NEXUS browser SDK (docs/sdk.md).
 *
 * One script tag on any site: an anonymous id, page and track events batched to /v1/batch
 * (retried with back-off, queued offline, sent by beacon when the page goes away), a consent
 * banner and API, text read for emotion in the browser only with consent, and the UI
 * adaptation that /v1/decide chooses, applied as CSS custom properties and copy.
 *
 * Plain ES2017 in one function, no dependencies, no build step. Served at /sdk/nexus.js
 * after edge-emotion.js, which defines NexusEdgeEmotion. Nothing here may throw into the
 * host page: every entry point catches and warns.
 */
(function (window, document) {
  "use strict";

  if (!window || !document || (window.nexus && window.nexus.__nexus)) return;

  var VERSION = "__NEXUS_VERSION__";
  var PURPOSES = ["analytics", "emotion_analysis", "personalisation", "marketing"];
  var PLUTCHIK = ["joy", "trust", "fear", "surprise", "sadness", "disgust", "anger", "anticipation"];
  var MAX_QUEUE = 500; // messages kept, in memory and in localStorage
  var BATCH_AT = 20; // flush at once when this many are waiting
  var MAX_BATCH = 100; // messages per request
  var MAX_BATCH_BYTES = 400000; // the server takes 500 KB per batch
  var BEACON_BYTES = 60000; // browsers refuse beacons (and keepalive fetches) past 64 KB
  var MAX_BACKOFF_MS = 30000;
  var CHAT_FIELD = 'textarea[name="message"], input[name="message"]';
  // Never sent from forms: secrets, files, and contact details (PII; see docs/sdk.md).
  var NEVER_TYPES = /^(password|hidden|file|email|tel|submit|button|reset|image)$/;
  var NEVER_NAMES = /e-?mail|phone|^tel|mobile|password|card|iban/i;
  var CHOICE_TYPES = /^(checkbox|radio|select-one|select-multiple)$/;
  var KEYS = { aid: "nexus_aid", uid: "nexus_uid", queue: "nexus_queue", consent: "nexus_consent" };

  var Edge = window.NexusEdgeEmotion;
  var script = document.currentScript;
  var nonce = (script && (script.nonce || script.getAttribute("nonce"))) || "";

  /** Everything the SDK knows, in one place. */
  var state = {
    ready: false,
    options: {},
    writeKey: "",
    apiHost: "",
    visitorId: "",
    userId: null,
    bootstrap: null,
    mode: "opt_out",
    consent: {},
    answered: false,
    consentSync: Promise.resolve(),
    queue: [], // sendable, mirrored in localStorage
    held: [], // waiting for an analytics answer (opt-in), memory only
    early: [], // calls made before init
    sending: null,
    attempt: 0,
    retryAt: 0,
    model: null,
    modelFailedAt: 0,
    initAt: 0,
    applied: null, // {key, tone} on the page now
    tokens: [], // custom properties this SDK set
    domPending: null,
    shield: null, // the anti-flicker <style>
    listeners: { adaptation: [], consent: [] },
  };

  // --- small helpers -----------------------------------------------------------------------

  function warn() {
    try {
      var args = Array.prototype.slice.call(arguments);
      args.unshift("[nexus]");
      window.console.warn.apply(window.console, args);
    } catch (e) {
      // no console: nothing to do
    }
  }

  /** `fn` wrapped so that it never throws: errors are warned and `fallback` returned. */
  function safe(fn, fallback) {
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (e) {
        warn(e);
        return fallback;
      }
    };
  }

  /** An async `fn` whose Promise never rejects: errors are warned and resolve to null. */
  function settled(fn) {
    return function () {
      try {
        return Promise.resolve(fn.apply(this, arguments)).catch(function (e) {
          warn(e);
          return null;
        });
      } catch (e) {
        warn(e);
        return Promise.resolve(null);
      }
    };
  }

  function now() {
    return window.performance && performance.now ? performance.now() : Date.now();
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function clamp(value, low, high) {
    var n = Number(value);
    return isFinite(n) ? Math.min(high, Math.max(low, n)) : 0;
  }

  /** `n` random characters of RFC 4648 base32 (lower case), from crypto.getRandomValues. */
  function randomBase32(n) {
    var alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    var bytes = new Uint8Array(n);
    window.crypto.getRandomValues(bytes);
    var out = "";
    for (var i = 0; i < n; i++) out += alphabet[bytes[i] & 31]; // 256 = 8 * 32: unbiased
    return out;
  }

  var storage = {
    raw: function (key) {
      try {
        return window.localStorage.getItem(key);
      } catch (e) {
        return null;
      }
    },
    get: function (key) {
      try {
        var text = storage.raw(key);
        return text == null ? null : JSON.parse(text);
      } catch (e) {
        return null;
      }
    },
    set: function (key, value) {
      try {
        window.localStorage.setItem(key, typeof value === "string" ? value : JSON.stringify(value));
      } catch (e) {
        // private mode or full: memory still works
      }
    },
    remove: function (key) {
      try {
        window.localStorage.removeItem(key);
      } catch (e) {
        // as above
      }
    },
  };

  function readCookie(name) {
    var parts = document.cookie ? document.cookie.split(/;\s*/) : [];
    for (var i = 0; i < parts.length; i++) {
      var at = parts[i].indexOf("=");
      if (parts[i].slice(0, at) === name) {
        try {
          return decodeURIComponent(parts[i].slice(at + 1));
        } catch (e) {
          return null;
        }
      }
    }
    return null;
  }

  function validId(value) {
    return typeof value === "string" && /^[^\x00-\x1f\x7f]{1,200}$/.test(value) ? value : null;
  }

  /** The visitor's anonymous id: the server's (bootstrap) or the caller's, else the cookie,
   * else localStorage, else a new one; written back to both. */
  function resolveVisitorId(given) {
    var id =
      validId(given) || validId(readCookie(KEYS.aid)) || validId(storage.raw(KEYS.aid)) || "anon_" + randomBase32(26);
    document.cookie =
      KEYS.aid + "=" + encodeURIComponent(id) + "; path=/; max-age=31536000; SameSite=Lax" +
      (window.location.protocol === "https:" ? "; Secure" : "");
    storage.set(KEYS.aid, id);
    return id;
  }

  function whenDom(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", safe(fn));
    else fn();
  }

  /** Find `selector` in `form`, then in its block, then beside it, then anywhere. */
  function near(form, selector) {
    var scopes = [form, form.closest("[data-nexus-block]"), form.parentElement, document];
    for (var i = 0; i < scopes.length; i++) {
      var found = scopes[i] && scopes[i].querySelector(selector);
      if (found) return found;
    }
    return null;
  }

  function element(tag, attributes, text) {
    var el = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      el.setAttribute(name, attributes[name]);
    });
    if (text) el.textContent = text;
    return el;
  }

  /** A <style> carrying the nonce of this script, so a page's CSP nonce admits it. */
  function injectStyle(css, marker) {
    var style = element("style", marker ? { [marker]: "" } : {});
    if (nonce) style.setAttribute("nonce", nonce);
    style.textContent = css;
    (document.head || document.documentElement).appendChild(style);
    return style;
  }

  function emit(name, detail) {
    state.listeners[name].slice().forEach(function (fn) {
      try {
        fn(detail);
      } catch (e) {
        warn(e);
      }
    });
  }

  // --- consent -------------------------------------------------------------------------

  function defaults(mode) {
    // opt_in: nothing before an answer. Otherwise (no server view, or opt_out) analytics and
    // personalisation go ahead, but no one's words are read until they say so.
    var optIn = mode === "opt_in";
    return { analytics: !optIn, emotion_analysis: false, personalisation: !optIn, marketing: false };
  }

  function merged(base, answers) {
    var out = {};
    PURPOSES.forEach(function (p) {
      out[p] = isObject(answers) && typeof answers[p] === "boolean" ? answers[p] : !!base[p];
    });
    return out;
  }

  function loadConsent() {
    var boot = state.bootstrap && isObject(state.bootstrap.consent) ? state.bootstrap.consent : null;
    state.mode = (boot && boot.mode) || state.options.consentMode || "opt_out";
    state.consent = defaults(state.mode);
    state.answered = false;
    if (boot && isObject(boot.permitted)) {
      state.consent = merged(state.consent, boot.permitted);
      state.answered = !!boot.answered;
    }
    var stored = storage.get(KEYS.consent);
    if (!state.answered && stored && isObject(stored.purposes)) {
      state.consent = merged(state.consent, stored.purposes);
      state.answered = true;
    }
  }

  /** "granted", "denied" or "pending" (opt-in and no answer yet: events wait in memory). */
  function analytics() {
    if (state.consent.analytics) return "granted";
    return state.mode === "opt_in" && !state.answered ? "pending" : "denied";
  }

  function setConsent(purposes, source) {
    var answers = {};
    PURPOSES.forEach(function (p) {
      if (isObject(purposes) && typeof purposes[p] === "boolean") answers[p] = purposes[p];
    });
    if (!Object.keys(answers).length) return Promise.resolve(getConsent());
    state.consent = merged(state.consent, answers);
    state.answered = true;
    storage.set(KEYS.consent, { purposes: state.consent, at: new Date().toISOString() });
    // Events and decisions wait for the server to know the answer, so that it screens them
    // by the answer just given.
    state.consentSync = api("/v1/consent", {
      visitor_id: state.visitorId,
      purposes: answers,
      source: source || "sdk",
    }).catch(warn);
    removeBanner();
    consentChanged();
    return state.consentSync.then(getConsent);
  }

  function consentChanged() {
    var status = analytics();
    if (status === "granted" && state.held.length) {
      state.held.splice(0).forEach(enqueue);
    } else if (status === "denied") {
      state.held = [];
      state.queue = [];
      persist();
    }
    if (state.consent.emotion_analysis) whenDom(prefetchModel);
    emit("consent", getConsent());
  }

  function getConsent() {
    return merged(state.consent, {});
  }

  // --- the consent banner --------------------------------------------------------------

  var LABELS = {
    analytics: ["Analytics", "Count visits and clicks to improve this site."],
    emotion_analysis: [
      "Emotion analysis",
      "Read the tone of what you type in chat and forms, in your browser, to adapt this page.",
    ],
    personalisation: ["Personalisation", "Adapt this page's look and wording to you."],
    marketing: ["Marketing", "Use this visit to contact you about offers."],
  };

  var BANNER_CSS =
    ".nexus-consent{position:fixed;z-index:2147483000;left:1rem;right:1rem;bottom:1rem;max-width:40rem;" +
    "margin:0 auto;padding:1rem 1.25rem;background:var(--nexus-consent-bg,#fff);color:var(--nexus-consent-fg,#1d1d1f);" +
    "border:1px solid #8a8a8e;border-radius:.5rem;box-shadow:0 .25rem 1.5rem rgba(0,0,0,.2);font:15px/1.45 system-ui,sans-serif}" +
    ".nexus-consent p{margin:0 0 .75rem}" +
    ".nexus-consent button{font:inherit;padding:.45rem .9rem;margin:.25rem .5rem .25rem 0;border-radius:.35rem;" +
    "border:1px solid var(--nexus-accent,#2a4bd7);background:#fff;color:#1d1d1f;cursor:pointer}" +
    ".nexus-consent button[data-primary]{background:var(--nexus-accent,#2a4bd7);color:#fff}" +
    ".nexus-consent :focus-visible{outline:3px solid var(--nexus-focus,#f2a900);outline-offset:2px}" +
    ".nexus-consent fieldset{border:0;padding:0;margin:0 0 .5rem}" +
    ".nexus-consent legend{font-weight:600;padding:0}" +
    ".nexus-consent label{display:block;margin:.5rem 0 0}" +
    ".nexus-consent small{display:block;margin-left:1.6rem;opacity:.85}";
  var styled = false;

  function showBanner() {
    whenDom(function () {
      if (!document.body || document.querySelector("[data-nexus-consent-banner]")) return;
      if (!styled) {
        injectStyle(BANNER_CSS, "data-nexus-style");
        styled = true;
      }
      var region = element("div", {
        role: "region",
        "aria-label": "Privacy choices",
        "data-nexus-consent-banner": "",
        class: "nexus-consent",
      });
      region.appendChild(
        element("p", {}, "This site can measure visits and adapt itself to you. Choose what you allow; you can change it later.")
      );
      var choices = element("fieldset", { id: "nexus-consent-choices", hidden: "" });
      choices.appendChild(element("legend", {}, "What may this site do?"));
      PURPOSES.forEach(function (purpose) {
        // The purpose names the checkbox; its description describes it.
        var label = element("label");
        var hint = "nexus-consent-" + purpose;
        label.appendChild(element("input", { type: "checkbox", name: purpose, "aria-describedby": hint }));
        label.appendChild(document.createTextNode(" " + LABELS[purpose][0]));
        choices.appendChild(label);
        choices.appendChild(element("small", { id: hint }, LABELS[purpose][1]));
      });
      function answer(all) {
        var purposes = {};
        PURPOSES.forEach(function (p) {
          purposes[p] = all === undefined ? choices.querySelector('[name="' + p + '"]').checked : all;
        });
        setConsent(purposes, "banner");
      }
      function button(label, onClick, attributes) {
        var b = element("button", Object.assign({ type: "button" }, attributes || {}), label);
        b.addEventListener("click", safe(onClick));
        return b;
      }
      var choose = button(
        "Choose",
        function () {
          choices.hidden = false;
          choose.hidden = true;
          save.hidden = false;
          choose.setAttribute("aria-expanded", "true");
          choices.querySelector("input").focus();
        },
        { "aria-expanded": "false", "aria-controls": "nexus-consent-choices" }
      );
      var save = button("Save", function () { answer(); }, { hidden: "" });
      region.appendChild(choices);
      region.appendChild(button("Accept all", function () { answer(true); }, { "data-primary": "" }));
      region.appendChild(button("Only necessary", function () { answer(false); }));
      region.appendChild(choose);
      region.appendChild(save);
      document.body.appendChild(region);
    });
  }

  function removeBanner() {
    var banner = document.querySelector("[data-nexus-consent-banner]");
    if (banner) banner.remove();
  }

  // --- messages, the queue and delivery ------------------------------------------------

  function message(type, fields) {
    var loc = window.location;
    var msg = Object.assign({ type: type }, fields, {
      anonymousId: state.visitorId,
      messageId: "nx_" + randomBase32(26),
      timestamp: new Date().toISOString(),
      context: {
        page: { path: loc.pathname, url: loc.href, referrer: document.referrer, title: document.title },
        userAgent: navigator.userAgent,
        library: { name: "nexus.js", version: VERSION },
      },
    });
    if (state.userId) msg.userId = state.userId;
    return msg;
  }

  function enqueue(msg) {
    var status = analytics();
    if (status === "denied") return;
    if (status === "pending") {
      state.held.push(msg);
      if (state.held.length > MAX_QUEUE) state.held.shift();
      return;
    }
    state.queue.push(msg);
    if (state.queue.length > MAX_QUEUE) state.queue.splice(0, state.queue.length - MAX_QUEUE);
    persist();
    if (state.queue.length >= BATCH_AT) flush(false);
  }

  function persist() {
    if (state.queue.length) storage.set(KEYS.queue, state.queue);
    else storage.remove(KEYS.queue);
  }

  /** What an earlier page left unsent (a reload, offline, a closed tab). */
  function restoreQueue() {
    var saved = storage.get(KEYS.queue);
    if (!Array.isArray(saved)) return;
    var seen = {};
    state.queue.forEach(function (m) { seen[m.messageId] = true; });
    var restored = saved.filter(function (m) {
      return isObject(m) && typeof m.messageId === "string" && !seen[m.messageId];
    });
    if (analytics() === "granted") state.queue = restored.concat(state.queue).slice(-MAX_QUEUE);
    else if (analytics() === "pending") state.held = restored.concat(state.held).slice(-MAX_QUEUE);
    persist();
  }

  /** The first messages of the queue, as many as fit one request. */
  function nextBatch() {
    var batch = [];
    var bytes = 0;
    for (var i = 0; i < state.queue.length && batch.length < MAX_BATCH; i++) {
      var size = JSON.stringify(state.queue[i]).length;
      if (batch.length && bytes + size > MAX_BATCH_BYTES) break;
      batch.push(state.queue[i]);
      bytes += size;
    }
    return batch;
  }

  function settle(batch) {
    var sent = {};
    batch.forEach(function (m) { sent[m.messageId] = true; });
    state.queue = state.queue.filter(function (m) { return !sent[m.messageId]; });
    persist();
  }

  function body(batch) {
    return JSON.stringify({ batch: batch, writeKey: state.writeKey, sentAt: new Date().toISOString() });
  }

  /** Exponential back-off with jitter, at most 30 s, and at least what Retry-After asks
   * (readable on the same origin; other origins see only the status). */
  function backOff(retryAfter) {
    state.attempt += 1;
    var ceiling = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, state.attempt - 1));
    var delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    if (retryAfter) {
      var seconds = Number(retryAfter);
      var asked = isFinite(seconds) ? seconds * 1000 : Date.parse(retryAfter) - Date.now();
      if (asked > 0) delay = Math.max(delay, Math.min(asked, 10 * MAX_BACKOFF_MS));
    }
    state.retryAt = Date.now() + delay;
  }

  async function deliver() {
    await state.consentSync;
    while (state.queue.length) {
      var batch = nextBatch();
      var text = body(batch);
      var response;
      try {
        response = await fetch(state.apiHost + "/v1/batch", {
          method: "POST",
          body: text,
          // text/plain: a simple request, no CORS preflight; the key is in the body.
          headers: { "Content-Type": "text/plain" },
          credentials: "omit",
          keepalive: text.length < BEACON_BYTES,
        });
      } catch (e) {
        return backOff(null); // offline, refused, or the server is down
      }
      if (response.ok) {
        state.attempt = 0;
        settle(batch);
      } else if (response.status === 429 || response.status >= 500) {
        return backOff(response.headers.get("Retry-After"));
      } else {
        warn("dropped " + batch.length + " events: /v1/batch answered " + response.status);
        settle(batch);
      }
    }
  }

  /** Send what is queued; `force` ignores a running back-off (an explicit flush, `online`). */
  function flush(force) {
    if (!state.ready) return Promise.resolve();
    if (state.sending) return state.sending;
    if (!state.queue.length || (!force && Date.now() < state.retryAt)) return Promise.resolve();
    state.sending = deliver()
      .catch(warn)
      .then(function () {
        state.sending = null;
      });
    return state.sending;
  }

  /**
   * Hand the queue to the browser with sendBeacon (the page is going away, or a click is
   * about to navigate), in requests under the beacon limit; what it refuses stays queued.
   * A beacon's fate is unknown, so its copy stays in localStorage until this page queues
   * something else: the next page resends it, and the server drops what it already has
   * (by messageId). A beacon lost to a network failure is then no event lost.
   */
  function beacon() {
    if (!state.queue.length || !navigator.sendBeacon || navigator.onLine === false) return;
    var kept = [];
    var chunk = [];
    function send() {
      if (!chunk.length) return;
      var ok = false;
      try {
        ok = navigator.sendBeacon(state.apiHost + "/v1/batch", new Blob([body(chunk)], { type: "text/plain" }));
      } catch (e) {
        ok = false;
      }
      if (!ok) kept = kept.concat(chunk);
      chunk = [];
    }
    state.queue.forEach(function (m) {
      if (chunk.length && body(chunk.concat([m])).length > BEACON_BYTES) send();
      chunk.push(m);
    });
    send();
    state.queue = kept;
  }

  // --- the API: authenticated JSON calls -------------------------------------------------

  function api(path, payload) {
    return fetch(state.apiHost + path, {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json", Authorization: "Basic " + btoa(state.writeKey + ":") },
      body: JSON.stringify(payload),
    }).then(function (response) {
      if (!response.ok) throw new Error(path + " answered " + response.status);
      return response.json();
    });
  }

  // --- calls ---------------------------------------------------------------------------

  function pageProperties() {
    var loc = window.location;
    return { path: loc.pathname, url: loc.href, referrer: document.referrer, title: document.title, search: loc.search };
  }

  function page(name, properties) {
    if (isObject(name)) {
      properties = name;
      name = undefined;
    }
    var fields = { properties: Object.assign(pageProperties(), isObject(properties) ? properties : {}) };
    if (typeof name === "string" && name) fields.name = name;
    enqueue(message("page", fields));
  }

  function track(event, properties) {
    if (typeof event !== "string" || !event) return warn("track needs an event name");
    enqueue(message("track", { event: event, properties: isObject(properties) ? properties : {} }));
  }

  function identify(userId, traits) {
    if (isObject(userId)) {
      traits = userId;
      userId = null;
    }
    if (userId != null && userId !== "") {
      state.userId = String(userId);
      storage.set(KEYS.uid, state.userId);
    }
    enqueue(message("identify", { traits: isObject(traits) ? traits : {} }));
  }

  // --- emotion ---------------------------------------------------------------------------

  function loadModel() {
    if (!state.model) {
      // After a failure, try again a minute later (offline now; or a model this origin may
      // not read, which will not change).
      if (!Edge || Date.now() - state.modelFailedAt < 60000) return Promise.resolve(null);
      state.model = fetch(state.apiHost + "/v1/emotion/edge-model", { credentials: "omit" })
        .then(function (response) {
          if (!response.ok) throw new Error("/v1/emotion/edge-model answered " + response.status);
          return response.json();
        })
        .then(function (artifact) {
          return new Edge.EdgeModel(artifact);
        })
        .catch(function (e) {
          warn(e);
          state.model = null;
          state.modelFailedAt = Date.now();
          return null;
        });
    }
    return state.model;
  }

  function prefetchModel() {
    if (state.consent.emotion_analysis && document.querySelector("[data-nexus-chat], [data-nexus-capture]")) {
      loadModel();
    }
  }

  /** The edge reading of `text`, made in this browser; null without emotion consent. */
  async function analyze(text) {
    if (!state.consent.emotion_analysis || typeof text !== "string" || !text.trim()) return null;
    var model = await loadModel();
    return model ? model.analyze(text.slice(0, 5000)) : null;
  }

  /** A reading (edge-emotion.js's, or any with Plutchik's eight) as decide's EmotionIn. */
  function emotionIn(reading) {
    var scores = isObject(reading.plutchik) ? reading.plutchik : reading;
    var out = {};
    PLUTCHIK.forEach(function (k) { out[k] = clamp(scores[k], 0, 1); });
    ["valence", "arousal", "dominance"].forEach(function (k) { out[k] = clamp(reading[k], -1, 1); });
    if (typeof reading.dominant === "string" && /^[a-z_]{1,50}$/.test(reading.dominant)) out.dominant = reading.dominant;
    out.confidence = reading.confidence == null ? 1 : clamp(reading.confidence, 0, 1);
    return out;
  }

  // --- decide and adaptations ----------------------------------------------------------

  function scalar(value) {
    return value === null || /^(string|number|boolean)$/.test(typeof value);
  }

  function attributes(extra) {
    var boot = state.bootstrap || {};
    var out = { path: window.location.pathname };
    if (boot.funnel != null) out.funnel = boot.funnel;
    if (boot.step != null) out.step = boot.step;
    [state.options.attributes, extra].forEach(function (more) {
      if (!isObject(more)) return;
      Object.keys(more).forEach(function (k) {
        var v = more[k];
        if (scalar(v) || (Array.isArray(v) && v.every(scalar))) out[k] = v;
      });
    });
    return out;
  }

  /**
   * POST /v1/decide for this visitor. Emotion (a reading, or text for the server to read)
   * goes only with emotion consent; an adaptation is asked for only with personalisation
   * consent. The adaptation in the answer is applied. Resolves to the answer.
   */
  async function decide(options, trigger, startedAt) {
    options = isObject(options) ? options : {};
    var started = typeof startedAt === "number" ? startedAt : now();
    await state.consentSync;
    var consent = state.consent;
    var request = {
      visitor_id: state.visitorId,
      attributes: attributes(options.attributes),
      adaptation: state.options.adaptation !== false && consent.personalisation,
    };
    if (consent.emotion_analysis) {
      if (isObject(options.emotion)) request.emotion = emotionIn(options.emotion);
      else if (typeof options.text === "string" && options.text.trim()) request.text = options.text.slice(0, 5000);
    }
    if (Array.isArray(options.flags)) request.flags = options.flags;
    if (Array.isArray(options.experiments)) request.experiments = options.experiments;
    var answer = await api("/v1/decide", request);
    if (answer && answer.adaptation) {
      apply(answer.adaptation, {
        trigger: trigger || (request.emotion || request.text ? "emotion" : "api"),
        decisionId: answer.decision_id,
        startedAt: started,
      });
    }
    return answer;
  }

  /** Put the element's text to `text`, remembering the text it had (data-nexus-original;
   * a hosted page that rendered another tone's words sets it to the block's own). */
  function setText(el, text) {
    if (!el.hasAttribute("data-nexus-original")) el.setAttribute("data-nexus-original", el.textContent);
    if (el.textContent !== text) el.textContent = text;
  }

  function restoreText(el) {
    var original = el.getAttribute("data-nexus-original");
    if (original !== null && el.textContent !== original) el.textContent = original;
  }

  function applyCopy(adaptation) {
    var copy = isObject(adaptation.copy) ? adaptation.copy : {};
    document.querySelectorAll("[data-nexus-slot]").forEach(function (el) {
      var slot = el.getAttribute("data-nexus-slot");
      if (typeof copy[slot] === "string") setText(el, copy[slot]);
      else restoreText(el);
    });
    var tones = state.bootstrap && isObject(state.bootstrap.tones) ? state.bootstrap.tones : {};
    Object.keys(tones).forEach(function (blockId) {
      var words = isObject(tones[blockId]) && isObject(tones[blockId][adaptation.tone]) ? tones[blockId][adaptation.tone] : {};
      document.querySelectorAll('[data-nexus-block="' + cssString(blockId) + '"] [data-nexus-field]').forEach(function (el) {
        var field = el.getAttribute("data-nexus-field");
        if (typeof words[field] === "string") setText(el, words[field]);
        else restoreText(el);
      });
    });
    document.querySelectorAll("[data-nexus-only-tones]").forEach(function (el) {
      var shown = el.getAttribute("data-nexus-only-tones").split(/\s+/).indexOf(adaptation.tone) >= 0;
      if (el.hidden === shown) el.hidden = !shown;
    });
  }

  function cssString(value) {
    return window.CSS && window.CSS.escape ? window.CSS.escape(value) : String(value).replace(/["\\]/g, "\\$&");
  }

  /**
   * Apply an adaptation {key, tone, tokens, copy, propensity}: design tokens as custom
   * properties on <html>, copy into [data-nexus-slot] elements, hosted blocks' tone copy and
   * tone-only blocks. Idempotent. A new one (key or tone changed) is announced: the window
   * event `nexus:adaptation`, nexus.on("adaptation") and a `$adaptation` event.
   */
  function apply(adaptation, how) {
    if (!isObject(adaptation) || typeof adaptation.key !== "string") return;
    how = how || {};
    var a = {
      key: adaptation.key,
      tone: typeof adaptation.tone === "string" ? adaptation.tone : "neutral",
      tokens: isObject(adaptation.tokens) ? adaptation.tokens : {},
      copy: adaptation.copy,
      propensity: typeof adaptation.propensity === "number" ? adaptation.propensity : null,
    };
    var root = document.documentElement;
    var previous = state.applied || { key: root.dataset.nexusAdaptation || null, tone: root.dataset.nexusTone || null };
    var names = Object.keys(a.tokens).map(function (name) {
      var property = name.indexOf("--") === 0 ? name : "--nexus-" + name;
      if (root.style.getPropertyValue(property) !== String(a.tokens[name])) {
        root.style.setProperty(property, String(a.tokens[name]));
      }
      return property;
    });
    state.tokens.forEach(function (property) {
      if (names.indexOf(property) < 0) root.style.removeProperty(property);
    });
    state.tokens = names;
    root.dataset.nexusTone = a.tone;
    root.dataset.nexusAdaptation = a.key;
    state.applied = { key: a.key, tone: a.tone };
    var fresh = previous.key !== a.key || previous.tone !== a.tone;
    state.domPending = a;
    whenDom(function () {
      if (state.domPending !== a) return; // a newer one came meanwhile
      state.domPending = null;
      applyCopy(a);
      unshield();
      if (fresh) announce(a, previous.key, how);
    });
  }

  function announce(a, previous, how) {
    var latency = Math.round((now() - (typeof how.startedAt === "number" ? how.startedAt : state.initAt)) * 10) / 10;
    var decisionId = how.decisionId || null;
    document.documentElement.dataset.nexusAdaptedMs = String(latency);
    var detail = { key: a.key, tone: a.tone, previous: previous, decisionId: decisionId, latencyMs: latency };
    try {
      window.dispatchEvent(new CustomEvent("nexus:adaptation", { detail: detail }));
    } catch (e) {
      warn(e);
    }
    emit("adaptation", detail);
    track("$adaptation", {
      decision_id: decisionId,
      adaptation: a.key,
      tone: a.tone,
      previous: previous,
      trigger: how.trigger || "api",
      latency_ms: latency,
      propensity: a.propensity,
    });
  }

  /** Anti-flicker: hide the body until the first decision is applied, at most 800 ms. */
  function shield() {
    state.shield = injectStyle("body{opacity:0!important}", "data-nexus-anti-flicker");
    setTimeout(unshield, 800);
  }

  function unshield() {
    if (state.shield) {
      state.shield.remove();
      state.shield = null;
    }
  }

  // --- the page's chat, forms, clicks and captured fields -------------------------------

  function onChat(event, form) {
    event.preventDefault();
    var startedAt = now();
    var field = form.querySelector(CHAT_FIELD);
    var text = field ? field.value.trim() : "";
    if (!text) return;
    var log = near(form, "[data-nexus-chat-log]");
    if (log) {
      var item = element(/^(UL|OL)$/.test(log.tagName) ? "li" : "p", { "data-nexus-from": "visitor" });
      item.textContent = text; // a text node: never markup
      log.appendChild(item);
    }
    field.value = "";
    var block = form.getAttribute("data-nexus-block") || undefined;
    if (!state.consent.emotion_analysis) {
      track("Chat Message", { length: text.length, block: block });
      return;
    }
    track("Chat Message", { text: text, block: block });
    analyze(text)
      .then(function (reading) {
        return decide(reading ? { emotion: reading } : { text: text }, "emotion", startedAt);
      })
      .catch(warn);
  }

  function formFields(form, withText) {
    var fields = {};
    var counts = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name) counts[el.name] = (counts[el.name] || 0) + 1;
    });
    Array.prototype.forEach.call(form.elements, function (el) {
      var name = el.name;
      var type = el.type || "";
      if (!/^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) || !name || el.disabled || NEVER_TYPES.test(type) || NEVER_NAMES.test(name)) return;
      if (type === "checkbox") {
        if (counts[name] > 1) {
          fields[name] = fields[name] || [];
          if (el.checked) fields[name].push(el.value);
        } else {
          fields[name] = el.checked;
        }
      } else if (type === "radio") {
        if (el.checked) fields[name] = el.value;
      } else if (type === "select-multiple") {
        fields[name] = Array.prototype.filter.call(el.options, function (o) { return o.selected; }).map(function (o) { return o.value; });
      } else if (CHOICE_TYPES.test(type) || withText) {
        fields[name] = el.value;
      }
    });
    return fields;
  }

  function onForm(event, form) {
    var name = form.getAttribute("data-nexus-event") || "Form Submitted";
    track(name, formFields(form, state.consent.emotion_analysis));
    if (form.hasAttribute("action")) {
      beacon(); // the page navigates now: hand the event to the browser
      return;
    }
    event.preventDefault();
    form.setAttribute("data-nexus-submitted", "");
    var done = near(form, "[data-nexus-form-done]");
    if (done) done.hidden = false;
  }

  function onSubmit(event) {
    var form = event.target;
    if (!form || form.tagName !== "FORM") return;
    if (form.hasAttribute("data-nexus-chat")) onChat(event, form);
    else if (form.hasAttribute("data-nexus-form")) onForm(event, form);
  }

  function onClick(event) {
    var el = event.target && event.target.closest ? event.target.closest("[data-nexus-track]") : null;
    if (!el) return;
    var name = el.getAttribute("data-nexus-track");
    var goal = el.getAttribute("data-nexus-goal");
    var properties = { label: (el.textContent || "").trim().slice(0, 200) };
    if (el.href) properties.href = el.href;
    if (name) track(name, properties);
    if (goal) track(goal, { via: name || undefined, href: properties.href });
    beacon(); // before the navigation the click may start
  }

  var timers = typeof WeakMap === "function" ? new WeakMap() : null;

  function onInput(event) {
    var el = event.target;
    if (!timers || !el || !el.closest || !el.closest("[data-nexus-capture]")) return;
    if (NEVER_TYPES.test(el.type || "") || NEVER_NAMES.test(el.name || "")) return;
    var startedAt = now();
    clearTimeout(timers.get(el));
    timers.set(
      el,
      setTimeout(function () {
        if (!state.consent.emotion_analysis) return;
        analyze(el.value)
          .then(function (reading) {
            return reading ? decide({ emotion: reading }, "emotion", startedAt) : null;
          })
          .catch(warn);
      }, 600)
    );
  }

  // --- init ----------------------------------------------------------------------------

  function readBootstrap() {
    var el = document.getElementById("nexus-bootstrap");
    if (!el) return null;
    try {
      var data = JSON.parse(el.textContent);
      return isObject(data) ? data : null;
    } catch (e) {
      warn("#nexus-bootstrap is not JSON", e);
      return null;
    }
  }

  function scriptOrigin() {
    try {
      return new URL(script.src, window.location.href).origin;
    } catch (e) {
      return window.location.origin;
    }
  }

  function init(options) {
    if (state.ready) return warn("nexus.init was called twice; the first one holds");
    var opts = Object.assign({}, isObject(options) ? options : {});
    var boot = isObject(opts.bootstrap) ? opts.bootstrap : readBootstrap();
    if (boot) {
      ["writeKey", "apiHost", "visitorId"].forEach(function (k) {
        if (opts[k] == null && boot[k] != null) opts[k] = boot[k];
      });
    }
    if (typeof opts.writeKey !== "string" || !opts.writeKey) return warn("nexus.init needs a writeKey");
    state.options = Object.assign({ autoPage: true, flushInterval: 1000, adaptation: true }, opts);
    state.initAt = now();
    state.bootstrap = boot;
    state.writeKey = opts.writeKey;
    state.apiHost = String(opts.apiHost || scriptOrigin()).replace(/\/+$/, "");
    state.visitorId = resolveVisitorId(opts.visitorId);
    state.userId = storage.raw(KEYS.uid);
    loadConsent();
    restoreQueue();
    state.ready = true;

    var personalise = state.options.adaptation !== false && state.consent.personalisation;
    if (state.options.antiFlicker && personalise && !boot) shield(); // hosted pages come adapted

    document.addEventListener("submit", safe(onSubmit), true);
    document.addEventListener("click", safe(onClick), true);
    document.addEventListener("input", safe(onInput), true);
    window.addEventListener("pagehide", safe(beacon));
    document.addEventListener("visibilitychange", safe(function () {
      if (document.visibilityState === "hidden") beacon();
    }));
    window.addEventListener("online", safe(function () {
      state.attempt = 0;
      state.retryAt = 0;
      flush(true);
    }));
    setInterval(safe(function () { flush(false); }), Math.max(100, Number(state.options.flushInterval) || 1000));

    if (boot && boot.adaptation) {
      apply(boot.adaptation, { trigger: "init", decisionId: boot.decisionId, startedAt: state.initAt });
    } else if (!boot && personalise) {
      decide({}, "init", state.initAt)
        .catch(warn)
        .then(function () {
          whenDom(unshield); // after the copy, which waits for the DOM too
        });
    }
    if (!state.answered && state.options.consentBanner !== false) showBanner();
    if (state.consent.emotion_analysis) whenDom(prefetchModel);
    if (state.options.autoPage !== false) {
      var bootPage = boot && isObject(boot.page) ? boot.page : {};
      page(typeof bootPage.name === "string" ? bootPage.name : undefined, bootPage.properties);
    }
    state.early.splice(0).forEach(function (call) {
      nexus[call[0]].apply(nexus, call[1]);
    });
  }

  /** A public method: before init the call waits for it; afterwards it runs, never throwing. */
  function method(name, fn, fallback) {
    var run = safe(fn, fallback);
    return function () {
      if (!state.ready) {
        state.early.push([name, Array.prototype.slice.call(arguments)]);
        return fallback;
      }
      return run.apply(null, arguments);
    };
  }

  var nexus = {
    __nexus: true,
    version: VERSION,
    init: safe(init),
    page: method("page", page),
    track: method("track", track),
    identify: method("identify", identify),
    flush: settled(function () {
      // After what is in flight, send the rest, back-off or not.
      return (state.sending || Promise.resolve()).then(function () {
        return flush(true);
      });
    }),
    decide: settled(function (options) {
      return state.ready ? decide(options) : null;
    }),
    analyze: settled(function (text) {
      return state.ready ? analyze(text) : null;
    }),
    apply: safe(function (adaptation) {
      apply(adaptation, { trigger: "api" });
    }),
    visitorId: function () {
      return state.visitorId || null;
    },
    on: safe(function (name, fn) {
      if (!state.listeners[name] || typeof fn !== "function") return warn("nexus.on: unknown event " + name);
      state.listeners[name].push(fn);
      return function () {
        var at = state.listeners[name].indexOf(fn);
        if (at >= 0) state.listeners[name].splice(at, 1);
      };
    }),
    consent: {
      get: safe(getConsent, {}),
      set: settled(function (purposes) {
        return state.ready ? setConsent(purposes, "sdk") : null;
      }),
      showBanner: safe(showBanner),
    },
  };
  window.nexus = nexus;

  // Auto-init: a hosted page's bootstrap document, else the script tag's data attributes.
  safe(function () {
    var attr = function (name) {
      return script ? script.getAttribute("data-" + name) : null;
    };
    var boot = readBootstrap();
    if (boot) return init({ bootstrap: boot });
    if (attr("write-key")) {
      return init({
        writeKey: attr("write-key"),
        apiHost: attr("api-host") || undefined,
        consentBanner: attr("consent-banner") !== "false",
        autoPage: attr("auto-page") !== "false",
        antiFlicker: script.hasAttribute("data-anti-flicker"),
        consentMode: attr("consent-mode") || undefined,
      });
    }
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", safe(function () {
        var late = readBootstrap();
        if (late && !state.ready) init({ bootstrap: late });
      }));
    }
  })();
})(typeof window !== "undefined" ? window : null, typeof document !== "undefined" ? document : null);
