// tidings web interface: progressive enhancement of the server-rendered pages.
// - Inbox: opens the live stream (/api/v1/stream, the session cookie authenticates) and
//   inserts new items at the top without a reload; acks without a reload; keeps the
//   relative times fresh; desktop notifications when the user allowed them.
// Everything from the server is inserted as text (textContent), never as HTML.
'use strict';

(function () {
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';

  function relative(seconds) {
    var ago = Math.floor(Date.now() / 1000) - seconds;
    if (ago < 45) return 'just now';
    if (ago < 5400) return Math.max(1, Math.round(ago / 60)) + ' min ago';
    if (ago < 129600) return Math.round(ago / 3600) + ' h ago';
    return Math.round(ago / 86400) + ' days ago';
  }

  function refreshTimes() {
    var times = document.querySelectorAll('.inbox time[datetime]');
    for (var i = 0; i < times.length; i++) {
      var t = times[i];
      var ms = Date.parse(t.getAttribute('datetime'));
      if (isNaN(ms)) continue;
      t.textContent = relative(ms / 1000);
      t.title = new Date(ms).toLocaleString();
    }
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  var PRIORITY = { 1: 'min', 2: 'low', 3: 'default', 4: 'high', 5: 'urgent' };

  function safeLink(url) {
    if (typeof url !== 'string') return null;
    var u = url.replace(/^\s+/, '');
    return /^(https?:\/\/|mailto:|tel:)/i.test(u) ? u : null;
  }

  function ackForm(id, label) {
    var f = el('form', 'ack');
    f.method = 'post';
    f.action = '/app/ack/' + encodeURIComponent(id);
    var h = el('input');
    h.type = 'hidden';
    h.name = 'csrf';
    h.value = csrf;
    var b = el('button', null, 'Ack');
    b.type = 'submit';
    b.setAttribute('aria-label', 'Acknowledge: ' + (label.length > 80 ? label.slice(0, 79) + '…' : label));
    f.appendChild(h);
    f.appendChild(b);
    return f;
  }

  function renderItem(n) {
    var p = Number(n.priority) || 3;
    var li = el('li', 'item p' + p + ' new');
    li.id = 'n-' + n.id;
    li.setAttribute('data-id', n.id);
    var meta = el('div', 'meta');
    var prio = el('span', 'prio p' + p, PRIORITY[p] || p);
    prio.title = 'priority ' + p + ' of 5';
    meta.appendChild(prio);
    meta.appendChild(document.createTextNode(' '));
    meta.appendChild(el('span', 'source', n.topic || n.author || n.source || ''));
    meta.appendChild(document.createTextNode(' '));
    var iso = new Date((n.time || 0) * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
    var t = el('time', null, relative(n.time || 0));
    t.setAttribute('datetime', iso);
    t.title = new Date((n.time || 0) * 1000).toLocaleString();
    meta.appendChild(t);
    if (n.tags && n.tags.length) meta.appendChild(el('span', 'tags', n.tags.join(', ')));
    li.appendChild(meta);
    var heading = n.title ? n.title : n.message;
    li.appendChild(el('h2', 'title', heading));
    if (n.title) li.appendChild(el('p', 'msg', n.message));
    var actions = el('div', 'actions');
    var link = safeLink(n.click);
    if (link) {
      var a = el('a', 'click', 'Open link');
      a.href = link;
      a.rel = 'noopener noreferrer nofollow';
      a.target = '_blank';
      actions.appendChild(a);
    }
    actions.appendChild(ackForm(n.id, heading));
    li.appendChild(actions);
    return li;
  }

  function announce(text) {
    var live = document.getElementById('live');
    if (live) live.textContent = text;
  }

  function markAcked(li) {
    li.classList.add('acked');
    var f = li.querySelector('form.ack');
    if (f) {
      var s = el('span', 'acked-label', 'Acknowledged');
      f.parentNode.replaceChild(s, f);
    }
  }

  function onAckSubmit(ev) {
    var f = ev.target;
    if (!(f instanceof HTMLFormElement) || !f.classList.contains('ack')) return;
    ev.preventDefault();
    var body = new URLSearchParams(new FormData(f));
    var button = f.querySelector('button');
    if (button) button.disabled = true;
    fetch(f.action, {
      method: 'POST',
      body: body,
      credentials: 'same-origin',
      headers: { Accept: 'application/json' }
    }).then(function (r) {
      if (!r.ok) throw new Error('ack failed: ' + r.status);
      var li = f.closest('li.item');
      if (li) markAcked(li);
      announce('Acknowledged.');
    }).catch(function () {
      if (button) button.disabled = false;
      announce('Could not acknowledge; try again.');
    });
  }

  function desktopNotify(n) {
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    if (!document.hidden) return;
    try {
      new Notification(n.title || 'tidings', { body: n.message || '', tag: n.id });
    } catch (e) { /* some platforms only allow notifications from a service worker */ }
  }

  function setupNotifyButton() {
    var b = document.getElementById('notify');
    if (!b || !('Notification' in window) || Notification.permission !== 'default') return;
    b.hidden = false;
    b.addEventListener('click', function () {
      Notification.requestPermission().then(function () { b.hidden = true; });
    });
  }

  function openStream(list) {
    if (!('EventSource' in window)) return;
    var es = new EventSource('/api/v1/stream');
    es.addEventListener('open', function () {
      announce('Live: new notifications appear here.');
      document.body.setAttribute('data-live', 'open');
    });
    es.addEventListener('message', function (ev) {
      var n;
      try { n = JSON.parse(ev.data); } catch (e) { return; }
      if (!n || !n.id || document.getElementById('n-' + n.id)) return;
      var empty = document.getElementById('empty');
      if (empty) empty.remove();
      list.insertBefore(renderItem(n), list.firstChild);
      while (list.children.length > 200) list.removeChild(list.lastChild);
      announce('New: ' + (n.title || n.message || ''));
      desktopNotify(n);
    });
    es.addEventListener('error', function () {
      document.body.setAttribute('data-live', 'reconnecting');
      announce('Reconnecting to the live stream…');
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var list = document.getElementById('inbox');
    if (!list) return;
    document.addEventListener('submit', onAckSubmit);
    refreshTimes();
    setInterval(refreshTimes, 30000);
    setupNotifyButton();
    openStream(list);
  });
})();
