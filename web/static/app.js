'use strict';
// pimqtt's control page. Every message of the event stream is the whole state the user may
// see, so rendering is one function and a reconnect needs nothing special.
const $ = id => document.getElementById(id);
let es = null, timer = 0, lost = false, offline = false;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

async function api(path, body) {
  const r = await fetch(path, body ? {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)} : {});
  let j = {};
  try { j = await r.json(); } catch (e) {}
  if (r.status == 401 && path != '/api/login') signedOut();
  if (!r.ok) throw new Error(j.error || r.status + ' ' + r.statusText);
  return j;
}

function banner(text) {
  $('banner').textContent = text;
  $('banner').hidden = !text;
}

function showBanner() {
  banner(lost ? 'Connection to pimqtt lost, reconnecting…' : offline ? 'pimqtt cannot reach its MQTT broker: states may be out of date.' : '');
}

function signedOut() {
  if (es) es.close();
  es = null;
  $('app').hidden = $('status').hidden = true;
  $('login').hidden = false;
}

// start shows the page if signed in, the form if not, and retries while pimqtt is away.
async function start() {
  clearTimeout(timer);
  try {
    render(await api('/api/lines'));
    connect();
  } catch (e) {
    if ($('login').hidden) {
      lost = true;
      showBanner();
      timer = setTimeout(start, 3000);
    }
  }
}

function connect() {
  if (es) es.close();
  es = new EventSource('/api/events');
  es.onmessage = e => { lost = false; render(JSON.parse(e.data)); };
  es.onerror = () => {
    lost = true;
    showBanner();
    // EventSource retries by itself after a network error, but not after an HTTP error
    // (401 once the session is gone, 503): then ask again from the start.
    if (es.readyState == 2) { es = null; timer = setTimeout(start, 2000); }
  };
}

function render(s) {
  $('login').hidden = true;
  $('app').hidden = false;
  document.title = $('title').textContent = s.title;
  const st = $('status');
  st.hidden = false;
  st.className = 'pill ' + (s.connected ? s.status : '');
  st.textContent = s.connected ? s.status : 'no broker';
  offline = !s.connected;
  showBanner();
  lines($('outputs'), s.outputs, (li, o) => {
    let b = li.querySelector('.sw');
    if (!b) {
      li.append(el('span', 'name', o.name), b = el('button', 'sw'));
      b.type = 'button';
      b.setAttribute('role', 'switch');
      b.setAttribute('aria-label', o.name);
    }
    b.setAttribute('aria-checked', o.state == 'on');
    b.disabled = !o.writable;
    b.title = o.writable ? o.state : o.state + ' (read-only)';
  });
  lines($('inputs'), s.inputs, (li, o) => {
    if (!li.firstChild) li.append(el('span', 'name', o.name), el('span', 'led'));
    li.lastChild.className = 'led ' + o.state;
    li.lastChild.textContent = o.state;
  });
  $('outSec').hidden = !s.outputs.length;
  $('inSec').hidden = !s.inputs.length;
  const t = s.telemetry, dl = $('telemetry');
  $('telSec').hidden = !t;
  if (t) dl.replaceChildren(...flat(t, '', []).flatMap(([k, v]) => [el('dt', '', k), el('dd', '', v)]));
  const ev = (s.events || []).map(e => {
    const li = el('li'), tm = el('time', '', new Date(e.time).toLocaleTimeString());
    tm.dateTime = e.time;
    li.append(tm, el('span', '', (e.name || 'device') + ' ' + e.state), el('span', 'by', e.by || ''));
    return li;
  });
  if (ev.length) $('events').replaceChildren(...ev);
  $('user').textContent = s.user || 'nobody (no sign-in)';
  $('logout').hidden = !s.user;
  $('url').textContent = s.url || '';
}

// lines updates the list ul to items, keeping each line's element (so a press in progress is
// not lost) and marking it with data-name and data-state.
function lines(ul, items, update) {
  const old = new Map([...ul.children].map(li => [li.dataset.name, li]));
  ul.replaceChildren(...items.map(o => {
    const li = old.get(o.name) || el('li');
    li.dataset.name = o.name;
    li.dataset.state = o.state;
    update(li, o);
    return li;
  }));
}

// flat turns the telemetry object into label/value pairs; key suffixes give units
// (_c °C, _s duration, _bytes, _percent).
function flat(o, pre, out) {
  for (const [k, v] of Object.entries(o)) {
    const key = pre + k;
    if (v && typeof v == 'object' && !Array.isArray(v)) flat(v, key + ' ', out);
    else out.push([key.replace(/_(c|s|bytes|percent)$/, '').replace(/_/g, ' '), [].concat(v).map(x => unit(k, x)).join(' ')]);
  }
  return out;
}

function unit(k, v) {
  if (typeof v != 'number') return String(v);
  if (/_c$/.test(k)) return v.toFixed(1) + ' °C';
  if (/_percent$/.test(k)) return v.toFixed(1) + ' %';
  if (/_bytes$/.test(k)) {
    let u = 0;
    while (v >= 1024 && u < 4) { v /= 1024; u++; }
    return v.toFixed(u ? 1 : 0) + ' ' + ['B', 'KiB', 'MiB', 'GiB', 'TiB'][u];
  }
  if (/_s$/.test(k)) {
    const d = Math.floor(v / 86400), h = Math.floor(v % 86400 / 3600), m = Math.floor(v % 3600 / 60);
    return (d ? d + ' d ' : '') + (d || h ? h + ' h ' : '') + m + ' min';
  }
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

$('outputs').onclick = async e => {
  const b = e.target.closest('.sw');
  if (!b || b.disabled) return;
  b.classList.add('busy');
  try {
    await api('/api/outputs/' + encodeURIComponent(b.parentNode.dataset.name), {state: b.getAttribute('aria-checked') == 'true' ? 'off' : 'on'});
  } catch (err) {
    banner(err.message);
  }
  b.classList.remove('busy');
};

$('login').onsubmit = async e => {
  e.preventDefault();
  const f = e.target;
  $('loginError').textContent = '';
  try {
    await api('/api/login', {user: f.user.value, password: f.password.value});
    f.password.value = '';
    start();
  } catch (err) {
    $('loginError').textContent = err.message;
  }
};

$('logout').onclick = async () => {
  try { await api('/api/logout', {}); } catch (e) {}
  signedOut();
};

$('join').ontoggle = () => { if ($('join').open) $('qr').src = '/api/qr.svg'; };

start();
