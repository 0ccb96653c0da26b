/* The page and adaptation editors' comfort layer (templates/page_editor.html, adaptation.html).

   Everything here is optional: without it the forms still post to the server, which applies
   structural changes, validates and saves. With it:
   - the preview follows typing: ~300 ms after the last change the editor form is posted to
     POST /pages/preview into a fresh hidden frame named "preview", which replaces the shown
     one once loaded (no flicker, and no entry in the browser's history per keystroke);
   - the preview frame carries back what the server read (#nexus-editor-echo): the document,
     kept in the "Advanced" JSON textarea, and its problems, shown next to their fields;
   - variants are keyboard-usable tabs (WAI-ARIA tabs pattern: arrows, Home, End);
   - editing inside a variant (or a tone) shows that variant (and tone) in the preview;
   - colour pickers stay in step with design token values. */
(function () {
  "use strict";

  var DELAY_MS = 300;

  function byId(id) { return id ? document.getElementById(id) : null; }

  function each(list, fn) { Array.prototype.forEach.call(list, fn); }

  /* --- variant tabs --------------------------------------------------------------------- */

  function setupTabs(root, onSelect) {
    var list = root.querySelector('[role="tablist"]');
    if (!list) { return; }
    var tabs = Array.prototype.slice.call(list.querySelectorAll('[role="tab"]'));
    var input = root.querySelector("input[data-selected]");
    function select(index, focus, user) {
      tabs.forEach(function (tab, k) {
        var on = k === index;
        tab.setAttribute("aria-selected", on ? "true" : "false");
        tab.tabIndex = on ? 0 : -1;
        var panel = byId(tab.getAttribute("aria-controls"));
        if (panel) { panel.hidden = !on; }
      });
      if (input) { input.value = String(index); }
      if (focus) { tabs[index].focus(); }
      if (user && onSelect) { onSelect(byId(tabs[index].getAttribute("aria-controls"))); }
    }
    tabs.forEach(function (tab, index) {
      tab.addEventListener("click", function () { select(index, false, true); });
      tab.addEventListener("keydown", function (event) {
        var to = null;
        if (event.key === "ArrowRight" || event.key === "ArrowDown") { to = (index + 1) % tabs.length; }
        if (event.key === "ArrowLeft" || event.key === "ArrowUp") { to = (index - 1 + tabs.length) % tabs.length; }
        if (event.key === "Home") { to = 0; }
        if (event.key === "End") { to = tabs.length - 1; }
        if (to !== null) { event.preventDefault(); select(to, true, true); }
      });
    });
    root.nexusSelectTab = function (panel) {
      var index = tabs.findIndex(function (tab) { return tab.getAttribute("aria-controls") === panel.id; });
      if (index >= 0) { select(index, false, false); }
    };
    list.hidden = false;
    var start = input ? parseInt(input.value, 10) : 0;
    select(start >= 0 && start < tabs.length ? start : 0, false, false);
    // A renamed variant renames its tab.
    each(root.querySelectorAll("[data-variant-key]"), function (keyInput) {
      keyInput.addEventListener("input", function () {
        var panel = keyInput.closest("[role=tabpanel]");
        var tab = panel && byId(panel.getAttribute("aria-labelledby"));
        var label = tab && tab.querySelector("[data-tab-key]");
        if (label) { label.textContent = keyInput.value || "(no key)"; }
      });
    });
  }

  /* Show the tab panel (and open the <details>) an element is in, e.g. a field with an error. */
  function reveal(element) {
    var panel = element.closest("[role=tabpanel]");
    var tabs = panel && panel.closest("[data-tabs]");
    if (tabs && tabs.nexusSelectTab && panel.hidden) { tabs.nexusSelectTab(panel); }
    var details = element.closest("details");
    if (details) { details.open = true; }
  }

  /* --- problems next to their fields ------------------------------------------------------ */

  function clearProblems(form) {
    each(form.querySelectorAll(".field-error"), function (el) { el.remove(); });
    each(form.querySelectorAll("[aria-invalid]"), function (el) { el.removeAttribute("aria-invalid"); });
    each(form.querySelectorAll("[aria-describedby]"), function (el) {
      var ids = el.getAttribute("aria-describedby").split(/\s+/).filter(function (id) {
        return id && id.indexOf("error-") !== 0;
      });
      if (ids.length) { el.setAttribute("aria-describedby", ids.join(" ")); } else { el.removeAttribute("aria-describedby"); }
    });
  }

  function showProblems(form, problems) {
    clearProblems(form);
    var messages = {};
    problems.forEach(function (problem) {
      if (!problem.field) { return; }
      messages[problem.field] = (messages[problem.field] ? messages[problem.field] + " " : "") + problem.message;
    });
    Object.keys(messages).forEach(function (key) {
      var target = byId("f-" + key);
      if (!target) { return; }
      var note = document.createElement("p");
      note.className = "field-error";
      note.id = "error-" + key;
      note.textContent = messages[key];
      var control = /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName);
      if (control) {
        var help = byId("help-" + key);
        var after = help && help.parentNode === target.parentNode ? help : target;
        after.insertAdjacentElement("afterend", note);
        target.setAttribute("aria-invalid", "true");
        var described = target.getAttribute("aria-describedby");
        target.setAttribute("aria-describedby", (described ? described + " " : "") + note.id);
      } else {
        var legend = target.querySelector(":scope > legend, :scope > h3, :scope > .block-head");
        if (legend) { legend.insertAdjacentElement("afterend", note); } else { target.insertBefore(note, target.firstChild); }
      }
    });
    var box = byId("problems");
    if (!box) { return; }
    box.textContent = "";
    if (!problems.length) { return; }
    var wrap = document.createElement("div");
    wrap.className = "notice danger";
    wrap.setAttribute("data-testid", "problems");
    var heading = document.createElement("h2");
    heading.textContent = problems.length + (problems.length === 1 ? " problem" : " problems") + " to fix";
    var list = document.createElement("ul");
    problems.forEach(function (problem) {
      var item = document.createElement("li");
      var where;
      if (problem.field && byId("f-" + problem.field)) {
        where = document.createElement("a");
        where.href = "#f-" + problem.field;
      } else {
        where = document.createElement("span");
      }
      where.textContent = problem.where;
      item.appendChild(where);
      item.appendChild(document.createTextNode(": " + problem.message));
      list.appendChild(item);
    });
    wrap.appendChild(heading);
    wrap.appendChild(list);
    box.appendChild(wrap);
  }

  /* --- the live preview ---------------------------------------------------------------------- */

  function chooseOption(select, value, label, tone) {
    if (!select || !value) { return; }
    var found = Array.prototype.find.call(select.options, function (option) { return option.value === value; });
    if (!found) {
      found = document.createElement("option");
      found.value = value;
      found.textContent = label;
      if (tone) { found.setAttribute("data-tone", tone); }
      select.appendChild(found);
    }
    select.value = value;
  }

  function chooseTone(select, tone) {
    if (!select || !tone) { return; }
    var options = Array.prototype.filter.call(select.options, function (option) {
      return option.getAttribute("data-tone") === tone;
    });
    var current = select.options[select.selectedIndex];
    if (current && current.getAttribute("data-tone") === tone) { return; }
    var saved = options.filter(function (option) { return option.value.indexOf("a:") === 0; })[0];
    if (saved || options[0]) { select.value = (saved || options[0]).value; return; }
    chooseOption(select, "t:" + tone, "Tone " + tone + " (copy only)", tone);
  }

  function Preview(box, status) {
    this.box = box;
    this.status = status;
    this.pending = null;
    this.onLoad = null;
  }

  Preview.prototype.current = function () {
    return this.box.querySelector("iframe.is-current") || this.box.querySelector("iframe");
  };

  /* Load what ``submit`` sends into a fresh frame named "preview"; the shown frame gives the
     name up first, so the submission targets the fresh one. */
  Preview.prototype.load = function (submit) {
    var self = this;
    if (this.pending && this.pending.parentNode) { this.pending.remove(); }
    var old = this.current();
    if (old) {
      try { old.contentWindow.name = ""; } catch (error) { old.remove(); old = null; }
      if (old) { old.removeAttribute("name"); }
    }
    var fresh = document.createElement("iframe");
    fresh.name = "preview";
    fresh.title = "Preview";
    fresh.setAttribute("sandbox", "allow-same-origin");
    fresh.className = "preview-frame is-loading";
    this.box.appendChild(fresh);
    this.pending = fresh;
    fresh.addEventListener("load", function () { self.loaded(fresh); });
    submit();
  };

  Preview.prototype.loaded = function (frame) {
    if (frame !== this.pending) { return; }
    var href = "";
    try { href = frame.contentWindow.location.href; } catch (error) { href = "?"; }
    if (href === "about:blank") { return; }
    this.pending = null;
    var old = null;
    each(this.box.querySelectorAll("iframe"), function (other) { if (other !== frame) { old = old || other; } });
    var y = 0;
    try { y = old ? old.contentWindow.scrollY : 0; } catch (error) { y = 0; }
    each(this.box.querySelectorAll("iframe"), function (other) { if (other !== frame) { other.remove(); } });
    frame.classList.remove("is-loading");
    frame.classList.add("is-current");
    try { frame.contentWindow.scrollTo(0, y); } catch (error) { /* another origin: top */ }
    var echo = null;
    try {
      var script = frame.contentDocument && frame.contentDocument.getElementById("nexus-editor-echo");
      echo = script ? JSON.parse(script.textContent) : null;
    } catch (error) { echo = null; }
    if (this.onLoad) { this.onLoad(echo); }
  };

  function setupLive(form) {
    var box = byId("preview-box");
    var button = byId("preview-refresh");
    var status = byId("preview-status");
    if (!box || !button) { return; }
    var preview = new Preview(box, status);
    var source = byId("source");
    var json = form.querySelector("[data-json]");
    var jsonNotice = byId("json-mode");
    var fields = byId("fields");
    var variantSelect = byId("preview_variant");
    var adaptationSelect = byId("preview_adaptation");
    var timer = null;
    var ours = false;
    var dirty = form.getAttribute("data-dirty") === "1";
    var leaving = false;
    var said = "";

    function say(text) { if (status && text !== said) { status.textContent = text; said = text; } }

    function refresh() {
      if (timer) { clearTimeout(timer); timer = null; }
      // A save (or another button) is on its way: a second submission of the form now would
      // replace the navigation it planned.
      if (leaving) { return; }
      say("Updating the preview…");
      preview.load(function () {
        ours = true;
        try { form.requestSubmit(button); } finally { ours = false; }
      });
    }

    function later() {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(refresh, DELAY_MS);
    }

    preview.onLoad = function (echo) {
      if (!echo) { say(""); return; }
      var problems = echo.problems || [];
      if (json && echo.document && (!source || source.value !== "json") && document.activeElement !== json) {
        json.value = JSON.stringify(echo.document, null, 2);
      }
      showProblems(form, problems);
      say(problems.length ? problems.length + (problems.length === 1 ? " problem" : " problems") + " to fix (listed above the form)." : "Preview up to date.");
    };

    function setSource(value) {
      if (!source || source.value === value) { return; }
      source.value = value;
      if (jsonNotice) { jsonNotice.hidden = value !== "json"; }
    }

    function follow(target) {
      var panel = target.closest("[data-variant]");
      if (!panel) { return; }
      var key = panel.querySelector("[data-variant-key]");
      if (key && key.value) { chooseOption(variantSelect, key.value, key.value); }
      var tone = target.closest("[data-tone]");
      var name = tone && tone.querySelector("[data-tone-name]");
      if (name && name.value) { chooseTone(adaptationSelect, name.value); }
    }

    form.addEventListener("input", function (event) {
      var target = event.target;
      dirty = true;
      if (target.hasAttribute("data-preview-control")) { refresh(); return; }
      if (target.hasAttribute("data-json")) { setSource("json"); } else if (fields && fields.contains(target)) { setSource("fields"); }
      follow(target);
      later();
    });

    form.addEventListener("submit", function (event) {
      if (ours) { return; }
      if (event.submitter === button) { event.preventDefault(); refresh(); return; }
      leaving = true;
      if (timer) { clearTimeout(timer); timer = null; }
    });

    window.addEventListener("beforeunload", function (event) {
      if (dirty && !leaving) { event.preventDefault(); event.returnValue = ""; }
    });

    each(form.querySelectorAll("[data-tabs]"), function (root) {
      setupTabs(root, function (panel) {
        if (panel) { follow(panel); refresh(); }
      });
    });

    if (dirty) { refresh(); }
  }

  /* Members who cannot edit: the selectors show the saved page in a variant and tone. */
  function setupSaved(savedForm) {
    var box = byId("preview-box");
    if (!box) { return; }
    var preview = new Preview(box, null);
    each(document.querySelectorAll('[form="' + savedForm.id + '"]'), function (control) {
      if (control.tagName !== "SELECT") { return; }
      control.addEventListener("change", function () {
        preview.load(function () { savedForm.requestSubmit(); });
      });
    });
  }

  /* --- colour pickers of design tokens ------------------------------------------------------- */

  function setupColours() {
    each(document.querySelectorAll("input[data-colour-for]"), function (picker) {
      var text = byId(picker.getAttribute("data-colour-for"));
      var was = byId(picker.getAttribute("data-colour-was"));
      if (!text || !was) { return; }
      picker.addEventListener("input", function () { text.value = picker.value; was.value = picker.value; });
      text.addEventListener("input", function () {
        var value = text.value.trim();
        if (/^#[0-9a-fA-F]{6}$/.test(value)) { picker.value = value.toLowerCase(); }
        was.value = picker.value;
      });
    });
  }

  function start() {
    var live = document.querySelector("form[data-live]");
    each(document.querySelectorAll("form:not([data-live]) [data-tabs]"), function (root) { setupTabs(root, null); });
    if (live) { setupLive(live); }
    var saved = byId("preview-saved");
    if (saved) { setupSaved(saved); }
    setupColours();
    document.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest('a[href^="#f-"]');
      var target = link && byId(link.getAttribute("href").slice(1));
      if (!target) { return; }
      event.preventDefault();
      reveal(target);
      target.scrollIntoView({ block: "center" });
      if (typeof target.focus === "function") { target.focus({ preventScroll: true }); }
    });
    var form = live || document.querySelector("form[data-focus]");
    var focus = form && byId(form.getAttribute("data-focus"));
    if (focus) {
      reveal(focus);
      focus.scrollIntoView({ block: "center" });
      focus.focus({ preventScroll: true });
    }
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
