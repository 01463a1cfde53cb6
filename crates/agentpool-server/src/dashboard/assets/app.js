// agentpool dashboard: live regions over server-sent events, confirmations, select-all.
// The server renders (and escapes) all HTML; this script only places it. No build step.
'use strict';

(function () {
  // Ask before actions marked data-confirm (on the button pressed, or on the form).
  document.addEventListener('submit', function (e) {
    var b = e.submitter;
    var msg = (b && b.getAttribute('data-confirm')) || e.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  document.addEventListener('change', function (e) {
    var t = e.target;
    if (t.hasAttribute && t.hasAttribute('data-select-all')) {
      var form = t.closest('form');
      form.querySelectorAll('input[name="id"]').forEach(function (c) { c.checked = t.checked; });
    }
  });

  var main = document.querySelector('[data-live]');
  if (!main || !window.EventSource) return;
  var status = document.querySelector('.live-status');
  function say(text) { if (status) status.textContent = text; }

  function split(data) {
    var i = data.indexOf('\n');
    return i < 0 ? [data, ''] : [data.slice(0, i), data.slice(i + 1)];
  }

  // Replace a region's content, keeping what the person was doing in it: ticked boxes, open
  // disclosures, and keyboard focus.
  function replace(data) {
    var parts = split(data);
    var el = document.getElementById(parts[0]);
    if (!el) return;
    // A stream's first message repeats what the page shows: leave it as it is, so that a
    // live region does not read out what did not change.
    var next = document.createElement('template');
    next.innerHTML = parts[1];
    if (next.innerHTML === el.innerHTML) return;
    var checked = {};
    el.querySelectorAll('input[type="checkbox"]:checked').forEach(function (c) { if (c.id) checked[c.id] = true; });
    var open = {};
    el.querySelectorAll('details[open][id]').forEach(function (d) { open[d.id] = true; });
    var active = document.activeElement;
    var focusId = active && el.contains(active) ? active.id : null;
    el.innerHTML = parts[1];
    Object.keys(checked).forEach(function (id) { var c = document.getElementById(id); if (c) c.checked = true; });
    Object.keys(open).forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    if (focusId) { var f = document.getElementById(focusId); if (f) f.focus(); }
    document.dispatchEvent(new CustomEvent('agentpool:updated', { detail: parts[0] }));
  }

  function append(data) {
    var parts = split(data);
    var el = document.getElementById(parts[0]);
    if (!el) return;
    var none = document.getElementById('no-events');
    if (none) none.remove();
    // Follow the stream while the reader is at the bottom of the page.
    var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    el.insertAdjacentHTML('beforeend', parts[1]);
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    document.dispatchEvent(new CustomEvent('agentpool:updated', { detail: parts[0] }));
  }

  var es = new EventSource(main.getAttribute('data-live'));
  es.addEventListener('open', function () { say('Live'); });
  es.addEventListener('replace', function (e) { replace(e.data); });
  es.addEventListener('append', function (e) { append(e.data); });
  es.addEventListener('end', function () { es.close(); say('Finished'); });
  es.addEventListener('error', function () {
    if (es.readyState === EventSource.CLOSED) say('Updates stopped; reload the page');
    else say('Reconnecting…');
  });
  window.addEventListener('pagehide', function () { es.close(); });
})();
