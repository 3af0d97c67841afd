// The stomp-edge status page: polls this board's /api/nodes (the live boards) and the
// /api/status snapshot of each (this board's directly, the others' through
// /api/status?node=ID, which this board fetches for us) once a second while the tab is
// visible, and draws one card per board. Everything is built with textContent: no board's
// data is ever parsed as HTML.
'use strict';

const POLL_MS = 1000;
const STALE_MS = 3000; // no answer for this long: "no answer"
const FETCH_TIMEOUT_MS = 2500;

/** Every board seen since the page opened: id → {id, url, self, listed, snap, lastOk, error}. */
const boards = new Map();
let selfId = null;
let timer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function getJson(url) {
  const controller = new AbortController();
  const t = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const res = await fetch(url, { cache: 'no-store', signal: controller.signal });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    return await res.json();
  } finally {
    clearTimeout(t);
  }
}

function fmtUptime(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtRate(x) {
  return x >= 100 ? String(Math.round(x)) : x.toFixed(1);
}

/** Whether this board has lost Redis: it cannot tell whether the others are alive. */
function blind() {
  const me = boards.get(selfId);
  return Boolean(me?.snap && me.snap.redis.state === 'down');
}

function stateOf(board, now) {
  if (!board.listed) return blind() ? 'stale' : 'down';
  if (!board.lastOk || now - board.lastOk > STALE_MS) return 'stale';
  return 'up';
}

/** One poll: the list of boards, then every board's snapshot in parallel. */
async function poll() {
  const now = Date.now();
  let list = null;
  try {
    list = await getJson('/api/nodes');
  } catch (err) {
    // This board itself does not answer: everything we show is getting old.
    for (const b of boards.values()) b.error = `this board does not answer: ${err.message}`;
  }
  if (list) {
    const listed = new Set();
    for (const entry of list) {
      listed.add(entry.serverId);
      if (entry.self) selfId = entry.serverId;
      const b = boards.get(entry.serverId) ?? { id: entry.serverId, snap: null, lastOk: 0, since: now };
      b.url = entry.url;
      b.self = entry.self;
      if (!b.listed) b.since = now;
      b.listed = true;
      boards.set(entry.serverId, b);
    }
    for (const b of boards.values()) {
      if (!listed.has(b.id) && b.listed) {
        b.listed = false;
        b.downSince = now;
      }
    }
    await Promise.all([...boards.values()].filter((b) => b.listed).map(async (b) => {
      try {
        b.snap = await getJson(b.self ? '/api/status' : `/api/status?node=${encodeURIComponent(b.id)}`);
        b.lastOk = Date.now();
        b.error = null;
      } catch (err) {
        b.error = err.name === 'AbortError' ? 'no answer' : err.message;
      }
    }));
  }
  render(Date.now(), list !== null);
}

/** A counter series as a person reads it: `closes_total{reason="io_error"}` → `closes: io error`. */
function prettySeries(series) {
  const [name, labels = ''] = series.replace(/^stomp_edge_/, '').split('{');
  const values = [...labels.matchAll(/"([^"]*)"/g)].map((m) => m[1].replace(/_/g, ' '));
  const base = name.replace(/_total$/, '').replace(/_/g, ' ');
  return values.length ? `${base}: ${values.join(', ')}` : base;
}

function troubleLevel(item) {
  if (item.lastMinute > 0) return 'bad';
  if (item.total > 0) return 'warn';
  return 'ok';
}

/** What is wrong across the boards, worst first: [{level, text}]. */
function problems(now) {
  const out = [];
  for (const b of sortedBoards()) {
    const state = stateOf(b, now);
    if (state === 'down') out.push({ level: 'bad', text: `${b.id} is down (left the cluster registry)` });
    else if (state === 'stale' && !b.listed) out.push({ level: 'warn', text: `${b.id}: unknown while this board has no Redis link` });
    else if (state === 'stale') out.push({ level: 'bad', text: `${b.id} has not answered for ${Math.round((now - (b.lastOk || b.since)) / 1000)} s` });
    const s = b.snap;
    if (!s || state === 'down') continue;
    if (s.status === 'draining') out.push({ level: 'warn', text: `${b.id} is shutting down` });
    if (s.redis.state === 'down') out.push({ level: 'bad', text: `${b.id} has lost Redis: serving its own clients alone` });
    if (s.redis.sentinelsConfigured && s.redis.sentinelsUp < s.redis.sentinelsConfigured) {
      out.push({ level: 'warn', text: `${b.id}: ${s.redis.sentinelsConfigured - s.redis.sentinelsUp} of ${s.redis.sentinelsConfigured} Redis sentinels not answering` });
    }
    for (const g of [...s.trouble, ...s.otherTrouble.map((f) => ({ ...f, title: prettySeries(f.series) }))]) {
      if (g.lastMinute > 0) out.push({ level: 'warn', text: `${b.id}: ${g.title}: ${g.lastMinute} in the last minute` });
    }
  }
  // Worst first (a stable sort keeps board order within a level).
  return out.sort((x, y) => (y.level === 'bad') - (x.level === 'bad'));
}

function sortedBoards() {
  return [...boards.values()].sort((a, b) => (b.id === selfId) - (a.id === selfId) || a.id.localeCompare(b.id));
}

function render(now, selfAnswered) {
  const main = document.querySelector('[data-testid="boards"]');
  const cards = sortedBoards().map((b) => card(b, now));
  // Cards keep their element from one update to the next (only their content is redrawn),
  // so nothing jumps and the layout is only touched when a board comes or goes.
  const current = [...main.children];
  if (current.length !== cards.length || current.some((c, i) => c !== cards[i])) main.replaceChildren(...cards);
  for (const c of cards) for (const canvas of c.querySelectorAll('canvas')) drawSpark(canvas);

  const summary = document.querySelector('[data-testid="summary"]');
  const list = problems(now);
  const total = boards.size;
  const up = [...boards.values()].filter((b) => stateOf(b, now) === 'up').length;
  if (!selfAnswered) {
    summary.dataset.state = 'bad';
    summary.textContent = 'This board is not answering: the figures below are getting old.';
  } else if (list.length === 0) {
    summary.dataset.state = 'ok';
    summary.textContent = `All ${total} board${total === 1 ? '' : 's'} healthy: no drops or rejections in the last minute.`;
  } else {
    summary.dataset.state = list.some((p) => p.level === 'bad') ? 'bad' : 'warn';
    summary.replaceChildren(
      el('span', { text: `${up} of ${total} board${total === 1 ? '' : 's'} up; ${list.length} thing${list.length === 1 ? '' : 's'} to look at:` }),
      el('ul', {}, ...list.map((p) => el('li', { text: p.text }))),
    );
  }
  document.querySelector('[data-testid="updated"]').textContent = `updated ${new Date(now).toLocaleTimeString()}`;
}

function figure(label, value, testid) {
  return el('div', { class: 'figure' },
    el('div', { class: 'value', 'data-testid': testid, text: String(value) }),
    el('div', { class: 'label', text: label }));
}

function spark(label, values, now, unit, testid) {
  const canvas = el('canvas', { 'data-testid': testid, 'aria-label': `${label}, last 10 minutes` });
  canvas.values = values;
  const last = values.length ? values[values.length - 1] : 0;
  return el('div', { class: 'spark' },
    el('div', { class: 'label' }, el('span', { text: label }), el('span', { text: `${unit(last)} now` })),
    canvas);
}

function card(b, now) {
  const state = stateOf(b, now);
  const s = b.snap;
  const pillText = state === 'up' ? 'up'
    : state === 'down' ? `down ${Math.round((now - b.downSince) / 1000)} s`
      : !b.listed ? 'unknown (no Redis here)'
        : `no answer ${Math.round((now - (b.lastOk || b.since)) / 1000)} s`;
  const head = el('div', { class: 'board-head' },
    el('h2', { 'data-testid': 'board-id', text: b.id }),
    b.self ? el('span', { class: 'tag', text: 'this board' }) : null,
    el('span', { class: 'pill', 'data-testid': 'board-state', 'data-state': state, text: pillText }));
  const node = b.el ?? el('section', { class: 'board', 'data-testid': 'board', 'data-server-id': b.id });
  b.el = node;
  node.dataset.state = state;
  node.replaceChildren(head);
  const url = el('a', { href: b.url, text: b.url });
  if (!s) {
    node.append(el('p', { class: 'meta' }, url), el('p', { class: 'empty', text: b.error ? `No answer yet: ${b.error}` : 'Waiting for its first answer…' }));
    return node;
  }
  const r = s.redis;
  const redis = r.state === 'disabled' ? 'no Redis (local mode)'
    : `Redis ${r.state}${r.primary ? `, primary ${r.primary}` : r.address ? ` at ${r.address}` : ''}`
      + (r.sentinelsConfigured ? `, sentinels ${r.sentinelsUp}/${r.sentinelsConfigured}` : '')
      + (r.failovers ? `, ${r.failovers} failover${r.failovers === 1 ? '' : 's'}` : '');
  node.append(el('p', { class: 'meta' },
    url, document.createTextNode(' · '),
    el('span', { 'data-testid': 'board-mode', text: s.mode }), document.createTextNode(' · '),
    el('span', { class: s.redis.state === 'down' ? 'bad' : '', 'data-testid': 'board-redis', text: redis }),
    document.createTextNode(` · v${s.version} · up ${fmtUptime(s.uptimeSeconds)}${s.status === 'draining' ? ' · shutting down' : ''}`)));
  if (s.tls) {
    // The certificate people compare with what their browser shows (docs/TLS.md).
    node.append(el('p', { class: 'meta' }, document.createTextNode('TLS certificate SHA-256: '),
      el('code', { 'data-testid': 'board-tls-fingerprint', text: s.tls.fingerprintSha256 })));
  }
  node.append(el('div', { class: 'figures' },
    figure('connections', s.connections.total, 'connections'),
    figure(`WebSocket / SockJS`, `${s.connections.websocket} / ${s.connections.sockjs}`, 'transports'),
    figure('subscriptions', s.subscriptions, 'subscriptions'),
    figure('rooms', s.roomCount, 'room-count'),
    figure('msgs in /s', fmtRate(s.messages.inPerSecond), 'rate-in'),
    figure('msgs out /s', fmtRate(s.messages.outPerSecond), 'rate-out')));
  const live = s.messages.inPerSecond + s.messages.outPerSecond;
  node.append(el('div', { class: 'sparks' },
    spark('connections', [...s.history.connections, s.connections.total], now, String, 'spark-connections'),
    spark('messages /s', [...s.history.messagesPerSecond, live], now, fmtRate, 'spark-messages')));

  // Counters that moved are listed one per line (red: grew in the last minute; amber: earlier);
  // the ones still at zero share one quiet line, so trouble stands out at a glance.
  const items = [...s.trouble, ...s.otherTrouble.map((f) => ({ ...f, key: f.series, title: prettySeries(f.series), series: [] }))];
  const moved = items.filter((g) => g.total > 0);
  const quiet = items.filter((g) => g.total === 0);
  node.append(el('h3', { text: 'Drops, rejections and failures' }),
    el('ul', { class: 'trouble', 'data-testid': 'trouble' }, ...moved.map((g) => {
      const detail = (g.series ?? []).filter((x) => x.total > 0)
        .map((x) => `${prettySeries(x.series)}: ${x.total}`).join('; ');
      return el('li', { 'data-level': troubleLevel(g), 'data-key': g.key, title: detail || null },
        el('span', { class: 'name', text: g.title }),
        el('span', { class: 'total', text: String(g.total) }),
        el('span', { class: 'recent', text: g.lastMinute > 0 ? `+${g.lastMinute} last min` : '' }));
    })),
  );
  if (quiet.length) {
    node.append(el('p', { class: 'empty', 'data-testid': 'trouble-none', text: `${moved.length ? 'Still 0' : 'None since start'}: ${quiet.map((g) => g.title).join(', ')}.` }));
  }

  node.append(el('h3', { text: s.roomCount > s.rooms.length ? `Rooms (largest ${s.rooms.length} of ${s.roomCount})` : 'Rooms' }));
  if (s.rooms.length === 0) node.append(el('p', { class: 'empty', text: 'No rooms.' }));
  else {
    node.append(el('ul', { class: 'rooms', 'data-testid': 'rooms' }, ...s.rooms.slice(0, 10).map((r) => el('li', { 'data-testid': 'room', 'data-room-id': r.roomId },
      el('span', { text: r.roomId }),
      el('span', { class: 'count', 'data-testid': 'room-count', text: String(r.participantCount) })))));
  }
  return node;
}

/** Draws `canvas.values` as a filled line, scaled to its largest value. */
function drawSpark(canvas) {
  const values = [...(canvas.values ?? [])];
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(1, canvas.clientWidth);
  const h = Math.max(1, canvas.clientHeight);
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext('2d');
  ctx.scale(ratio, ratio);
  if (values.length === 0) return;
  if (values.length === 1) values.unshift(values[0]); // a flat line until there is history
  const max = Math.max(1, ...values);
  const x = (i) => (i / (values.length - 1)) * (w - 2) + 1;
  const y = (v) => h - 2 - (v / max) * (h - 6);
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.strokeStyle = '#2563eb';
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.lineTo(x(values.length - 1), h);
  ctx.lineTo(x(0), h);
  ctx.closePath();
  ctx.fillStyle = 'rgba(37, 99, 235, 0.15)';
  ctx.fill();
}

let running = false;

async function loop() {
  if (running || document.hidden) return; // nobody looks: no requests at all
  running = true;
  try {
    await poll();
  } catch (err) {
    console.warn('status poll failed', err);
  } finally {
    running = false;
  }
  if (!document.hidden && timer === null) {
    timer = setTimeout(() => { timer = null; loop(); }, POLL_MS);
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && timer === null) loop();
});
loop();
