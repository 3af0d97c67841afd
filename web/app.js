// The stomp-edge chat page. One @stomp/stompjs client (vendored, global `StompJs`) talks to the
// board's own /ws; the room list and participant lists come from GET /api/rooms[/{roomId}].
// Rooms: SUBSCRIBE /topic/room/{id}, then SEND /app/room/{id}/join; our own JOIN event confirms
// the join. Errors arrive on /user/queue/errors. After a reconnect the page re-subscribes and
// re-joins the room it was in. All user text goes through textContent, never HTML.
// History: room topics are streams. A fresh join subscribes with `x-stream-offset:first` and
// shows the room's kept messages (with day separators) before the live ones; a reconnect
// subscribes from the next offset it has not seen (`offset=N` + `x-stream-epoch`), so nothing
// is missed and nothing shows twice; the RECEIPT's `x-stream-recovered` (or, after a reload,
// the saved position) tells whether some messages are gone, and the page says so.
// Failover: the page keeps the cluster's live boards (GET /api/nodes). When its own board stops
// answering for a few seconds it moves to another live board, carrying its name, room and
// stream position in the URL fragment; there it re-joins under the same name and recovers.
(function () {
  'use strict';

  // The server's default limits (CONTRACT.md); the server checks them again.
  const ROOM_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
  const MAX_USERNAME_CHARS = 32;
  const MAX_MESSAGE_BYTES = 4096;

  const ROOMS_POLL_MS = 3000;
  const RECONNECT_DELAY_MS = 2000;
  const REJOIN_RETRY_MS = 2000;
  const REJOIN_MAX_TRIES = 10;
  const ERROR_SHOW_MS = 8000;
  const MAX_MESSAGES_SHOWN = 500;
  const MAX_IDS_REMEMBERED = 2000;
  const FAILOVER_AFTER_MS = 2500; // the board silent this long: move to another one
  const HEALTH_TIMEOUT_MS = 1000;
  const STORE = {
    name: 'stomp-edge.username',
    room: 'stomp-edge.room',
    position: 'stomp-edge.position',
  };

  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
  const ui = {
    conn: $('connection-state'),
    me: $('me'),
    nameView: $('name-view'),
    nameForm: $('name-form'),
    nameInput: $('name-input'),
    nameError: $('name-error'),
    chatView: $('chat-view'),
    roomList: $('room-list'),
    roomListEmpty: $('room-list-empty'),
    joinForm: $('join-form'),
    roomInput: $('room-input'),
    roomInputError: $('room-input-error'),
    noRoom: $('no-room'),
    roomView: $('room-view'),
    currentRoom: $('current-room'),
    showRooms: $('show-rooms'),
    leave: $('leave-button'),
    participantCount: $('participant-count'),
    participants: $('participants'),
    messages: $('messages'),
    messageForm: $('message-form'),
    messageInput: $('message-input'),
    errors: $('errors'),
  };

  const state = {
    username: null,
    room: null, // the room on screen (joined, or being re-joined after a reconnect)
    pending: null, // the room we sent a join for and have not seen our own JOIN in yet
    leftWhilePending: false, // our LEAVE arrived from `room` while switching to `pending`
    rejoinTries: 0,
    subs: new Map(), // roomId -> stompjs subscription on /topic/room/{roomId}
    everConnected: false,
    roomsJson: '',
    // Streams: the next offset not yet shown, in which room and epoch ({room, epoch, next}).
    position: null,
    // A position saved before a reload: after the history is shown, whether it was complete.
    restored: null,
    recovering: new Map(), // roomId -> 'first' | 'offset': its SUBSCRIBE's RECEIPT is due
    backlog: [], // kept events of a room whose JOIN is not confirmed yet: shown after it
    seenIds: new Set(), // message-ids shown (one message never shows twice)
    lastDay: '', // the day of the last message shown, for day separators
    receipts: 0,
    nodes: [], // the live boards as GET /api/nodes last said
    downSince: 0, // when the connection was lost (0: connected)
    failoverTimer: null,
  };

  function store(key, value) {
    try {
      if (value === null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, typeof value === 'string' ? value : JSON.stringify(value));
    } catch (_) {
      /* storage disabled: fine */
    }
  }

  function load(key) {
    try {
      return sessionStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Connection

  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const client = new StompJs.Client({
    brokerURL: scheme + location.host + '/ws',
    reconnectDelay: RECONNECT_DELAY_MS,
    connectionTimeout: 5000,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    debug: () => {},
  });

  client.onConnect = () => {
    state.downSince = 0;
    const again = state.everConnected;
    state.everConnected = true;
    setConnState('connected');
    state.subs.clear(); // subscriptions ended with the old connection
    client.subscribe('/user/queue/errors', onErrorMessage);
    if (again && state.room) notice('Reconnected.', 'local');
    const room = state.pending || state.room;
    if (room && state.username) {
      state.rejoinTries = 0;
      sendJoin(room);
    }
    refreshRooms();
  };

  client.onWebSocketClose = () => {
    if (state.everConnected && ui.conn.dataset.state === 'connected' && state.room) {
      notice('Connection lost, reconnecting…', 'local');
    }
    setConnState(state.everConnected ? 'reconnecting' : 'connecting');
    if (state.everConnected && !state.downSince) state.downSince = Date.now();
    scheduleFailover();
  };

  // ---------------------------------------------------------------------------------------------
  // Failover to another board

  async function refreshNodes() {
    try {
      const nodes = await getJson('/api/nodes');
      if (Array.isArray(nodes)) state.nodes = nodes;
    } catch (_) {
      /* board away: keep the last list */
    }
  }

  function scheduleFailover() {
    if (state.failoverTimer || !state.downSince) return;
    state.failoverTimer = setTimeout(() => {
      state.failoverTimer = null;
      checkFailover();
    }, FAILOVER_AFTER_MS);
  }

  /** The board has been silent a while: if it does not answer /healthz either, move. */
  async function checkFailover() {
    if (!state.downSince || client.connected) return;
    let alive = false;
    try {
      const res = await fetch('/healthz', { cache: 'no-store', signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
      alive = res.ok;
    } catch (_) {
      alive = false;
    }
    const other = state.nodes.find((n) => n && !n.self && n.alive && typeof n.url === 'string'
      && /^https?:\/\//.test(n.url) && n.url.replace(/\/$/, '') !== location.origin);
    if (alive || !other || client.connected) {
      scheduleFailover();
      return;
    }
    const carry = { name: state.username, room: state.room || state.pending, position: state.position };
    notice('This board stopped answering: moving to ' + other.serverId + '…', 'local');
    location.assign(other.url.replace(/\/$/, '') + '/#failover=' + encodeURIComponent(JSON.stringify(carry)));
  }

  client.onStompError = (frame) => {
    showError('stomp', frame.headers.message || 'the server closed the connection');
  };

  function setConnState(s) {
    ui.conn.dataset.state = s;
    ui.conn.textContent = s;
  }

  // ---------------------------------------------------------------------------------------------
  // Rooms

  function sendJoin(roomId) {
    state.pending = roomId;
    state.leftWhilePending = false;
    if (!client.connected) return; // onConnect sends it
    if (!state.subs.has(roomId)) {
      subscribeRoom(roomId); // the JOIN goes once the room's kept messages are in
      return;
    }
    publishJoin(roomId);
  }

  /** Everything before our SUBSCRIBE's RECEIPT is history, so the JOIN goes after it. */
  function publishJoin(roomId) {
    client.publish({
      destination: '/app/room/' + roomId + '/join',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: state.username }),
    });
  }

  /** SUBSCRIBE to the room's stream: from the next unseen offset when its messages are on
   * screen (a reconnect), else from the first kept message (a join, a reload). */
  function subscribeRoom(roomId) {
    const p = state.position;
    const resume = p && p.room === roomId && roomId === state.room && p.epoch;
    const headers = resume
      ? { 'x-stream-offset': 'offset=' + p.next, 'x-stream-epoch': p.epoch }
      : { 'x-stream-offset': 'first' };
    if (!resume) {
      state.position = null;
      state.seenIds.clear();
    }
    state.receipts += 1;
    const receipt = 'room-' + state.receipts;
    headers.receipt = receipt;
    state.recovering.set(roomId, resume ? 'offset' : 'first');
    client.watchForReceipt(receipt, (frame) => onStreamReceipt(roomId, frame, resume));
    state.subs.set(roomId, client.subscribe('/topic/room/' + roomId, (m) => onRoomMessage(roomId, m), headers));
  }

  /** The kept messages are all in: say whether some could not be recovered. */
  function onStreamReceipt(roomId, frame, resumed) {
    state.recovering.delete(roomId);
    const epoch = frame.headers['x-stream-epoch'];
    const next = Number(frame.headers['x-stream-offset']);
    let complete = frame.headers['x-stream-recovered'] !== 'false';
    const before = state.restored;
    if (!resumed && before && before.room === roomId) {
      // After a reload: complete when the history reaches back to the last offset seen.
      const first = state.firstShown && state.firstShown.room === roomId ? state.firstShown.offset : next;
      complete = before.epoch === epoch && first <= before.next;
      state.restored = null;
    } else if (!resumed) {
      complete = true; // a new join: the kept history is what there is
    }
    if (!state.position && epoch && Number.isFinite(next)) {
      state.position = { room: roomId, epoch, next };
      savePosition();
    }
    if (!complete) {
      const text = 'Some messages from while you were away could not be recovered.';
      if (roomId === state.room) notice(text, 'lost');
      else state.backlog.push({ notice: text });
    }
    if (state.pending === roomId && client.connected && state.subs.has(roomId)) publishJoin(roomId);
  }

  function savePosition() {
    store(STORE.position, state.position);
  }

  function unsubscribe(roomId) {
    const sub = state.subs.get(roomId);
    state.subs.delete(roomId);
    state.recovering.delete(roomId);
    if (sub && client.connected) sub.unsubscribe();
  }

  function joinRoom(roomId) {
    if (!state.username || roomId === state.room) {
      showRoomsOnPhone(false);
      return;
    }
    state.rejoinTries = REJOIN_MAX_TRIES; // a join the person asked for is not retried
    sendJoin(roomId);
    if (!client.connected) notice('Not connected yet: joining #' + roomId + ' once connected.', 'local');
  }

  function leaveRoom() {
    const room = state.room;
    if (!room) return;
    if (client.connected) {
      client.publish({ destination: '/app/room/' + room + '/leave', body: '{}' });
    }
    unsubscribe(room);
    if (state.pending && state.pending !== room) unsubscribe(state.pending);
    state.room = null;
    state.pending = null;
    forgetRoom();
    renderRoom(true);
    refreshRooms();
    setTimeout(refreshRooms, 300);
  }

  /** Our own JOIN arrived: the room is ours now (and the previous one is left). */
  function confirmJoin(roomId) {
    const previous = state.room;
    state.pending = null;
    state.rejoinTries = 0;
    if (previous && previous !== roomId) unsubscribe(previous);
    state.room = roomId;
    store(STORE.room, roomId);
    if (previous !== roomId) {
      renderRoom(true);
      // The room's history arrived before our JOIN: show it now, on the fresh screen.
      for (const item of state.backlog) {
        if (item.notice) notice(item.notice, 'lost');
        else addEvent(item.ev, true);
      }
    }
    state.backlog = [];
    showRoomsOnPhone(false);
  }

  /** Out of the room for good: its saved position no longer matters. */
  function forgetRoom() {
    state.position = null;
    state.restored = null;
    state.backlog = [];
    store(STORE.room, null);
    store(STORE.position, null);
  }

  /** We are out of `roomId` (refused, removed): back to the room list. */
  function dropRoom(roomId) {
    unsubscribe(roomId);
    if (state.room === roomId) {
      state.room = null;
      forgetRoom();
      renderRoom(true);
    }
  }

  function onRoomMessage(roomId, frame) {
    let ev;
    try {
      ev = JSON.parse(frame.body);
    } catch (_) {
      return;
    }
    const id = frame.headers['message-id'];
    if (id) {
      if (state.seenIds.has(id)) return;
      state.seenIds.add(id);
      if (state.seenIds.size > MAX_IDS_REMEMBERED) state.seenIds.delete(state.seenIds.values().next().value);
    }
    const offset = Number(frame.headers['x-stream-offset']);
    const epoch = frame.headers['x-stream-epoch'];
    if (epoch && Number.isFinite(offset)) {
      const p = state.position;
      if (p && p.room === roomId && p.epoch === epoch && offset < p.next) return; // shown already
      state.position = { room: roomId, epoch, next: offset + 1 };
      if (!state.firstShown || state.firstShown.room !== roomId) state.firstShown = { room: roomId, offset };
      savePosition();
    }
    // Kept messages from before this subscription: shown, but they change nothing (a JOIN of
    // ours in the history is not the one we are waiting for).
    if (state.recovering.has(roomId)) {
      if (roomId === state.room) addEvent(ev, true);
      else if (roomId === state.pending) state.backlog.push({ ev });
      return;
    }
    const mine = ev.sender === state.username;
    if (ev.type === 'JOIN' && mine && roomId === state.pending) confirmJoin(roomId);
    if (roomId !== state.room) return; // a room we are leaving or not yet in
    if (ev.type === 'LEAVE' && mine) {
      if (state.pending && state.pending !== roomId) {
        state.leftWhilePending = true; // switching rooms: the server left this one for us
        return;
      }
      if (!state.pending) {
        addEvent(ev);
        dropRoom(roomId);
        refreshRooms();
        return;
      }
    }
    addEvent(ev);
    if (ev.type === 'JOIN' || ev.type === 'LEAVE') {
      if (Number.isInteger(ev.participantCount)) ui.participantCount.textContent = String(ev.participantCount);
      refreshParticipants();
      refreshRooms();
    }
  }

  function onErrorMessage(frame) {
    let err;
    try {
      err = JSON.parse(frame.body);
    } catch (_) {
      err = { code: 'error', message: frame.body };
    }
    const m = /^\/app\/room\/([^/]*)\/join$/.exec(err.destination || '');
    if (m && m[1] === state.pending) {
      const roomId = m[1];
      // After a reconnect our old session may still hold the name until the server notices it
      // is gone: retry a few times before giving up.
      if (err.code === 'username_taken' && roomId === state.room && state.rejoinTries < REJOIN_MAX_TRIES) {
        state.rejoinTries += 1;
        setTimeout(() => {
          if (state.pending === roomId && client.connected) sendJoin(roomId);
        }, REJOIN_RETRY_MS);
        return;
      }
      state.pending = null;
      if (roomId !== state.room) unsubscribe(roomId);
      if (roomId === state.room || state.leftWhilePending) dropRoom(state.room);
    }
    showError(err.code || 'error', err.message || 'request refused', err.destination);
  }

  // ---------------------------------------------------------------------------------------------
  // REST: room list and participants

  async function getJson(path) {
    const res = await fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } });
    if (res.status === 404) return null;
    if (!res.ok) throw new Error('HTTP ' + res.status);
    return res.json();
  }

  async function refreshRooms() {
    let rooms;
    try {
      rooms = await getJson('/api/rooms');
    } catch (_) {
      return; // server away: the connection state already says so
    }
    if (!Array.isArray(rooms)) return;
    rooms.sort((a, b) => b.participantCount - a.participantCount || String(a.roomId).localeCompare(String(b.roomId)));
    const json = JSON.stringify([rooms, state.room]);
    if (json === state.roomsJson) return;
    state.roomsJson = json;
    renderRoomList(rooms);
  }

  async function refreshParticipants() {
    const room = state.room;
    if (!room) return;
    let info;
    try {
      info = await getJson('/api/rooms/' + encodeURIComponent(room));
    } catch (_) {
      return;
    }
    if (room !== state.room) return; // moved on meanwhile
    const names = info && Array.isArray(info.participants) ? info.participants.slice() : [];
    names.sort((a, b) => (a === state.username ? -1 : b === state.username ? 1 : a.localeCompare(b)));
    ui.participants.replaceChildren(
      ...names.map((name) => {
        const li = document.createElement('li');
        li.dataset.testid = 'participant';
        li.textContent = name;
        if (name === state.username) li.className = 'self';
        return li;
      }),
    );
    ui.participantCount.textContent = String(names.length);
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering

  function renderRoomList(rooms) {
    ui.roomListEmpty.hidden = rooms.length > 0;
    ui.roomList.replaceChildren(
      ...rooms.map((r) => {
        const li = document.createElement('li');
        const button = document.createElement('button');
        button.type = 'button';
        button.dataset.testid = 'room-item';
        button.dataset.roomId = r.roomId;
        if (r.roomId === state.room) button.setAttribute('aria-current', 'true');
        const name = document.createElement('span');
        name.className = 'room-name';
        name.textContent = '#' + r.roomId;
        const count = document.createElement('span');
        count.className = 'room-count';
        count.dataset.testid = 'room-count';
        count.textContent = String(r.participantCount);
        count.title = r.participantCount === 1 ? '1 person' : r.participantCount + ' people';
        button.append(name, count);
        button.addEventListener('click', () => joinRoom(r.roomId));
        li.append(button);
        return li;
      }),
    );
  }

  /** Shows the current room (or the "pick a room" placeholder); `fresh` clears the history. */
  function renderRoom(fresh) {
    const room = state.room;
    document.body.classList.toggle('in-room', !!room);
    ui.roomView.hidden = !room;
    ui.noRoom.hidden = !!room;
    if (fresh) {
      state.lastDay = '';
      state.firstShown = null;
      ui.messages.replaceChildren();
      ui.participants.replaceChildren();
      ui.participantCount.textContent = '0';
    }
    ui.currentRoom.textContent = room || '';
    document.title = room ? '#' + room + ' · stomp-edge chat' : 'stomp-edge chat';
    state.roomsJson = ''; // highlight the current room on the next refresh
    if (room) {
      refreshParticipants();
      ui.messageInput.focus();
    }
  }

  function showRoomsOnPhone(show) {
    document.body.classList.toggle('show-rooms', show);
  }

  function appendItem(li) {
    const list = ui.messages;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(li);
    while (list.childElementCount > MAX_MESSAGES_SHOWN) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function timeOf(ms) {
    const d = new Date(typeof ms === 'number' ? ms : Date.now());
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function dayOf(ms) {
    const d = new Date(typeof ms === 'number' ? ms : Date.now());
    return d.getFullYear() + '-' + d.getMonth() + '-' + d.getDate();
  }

  /** "Today", "Yesterday", or the date, for the separator above a day's first message. */
  function dayLabel(ms) {
    const d = new Date(typeof ms === 'number' ? ms : Date.now());
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayOf(d.getTime()) === dayOf(today.getTime())) return 'Today';
    if (dayOf(d.getTime()) === dayOf(yesterday.getTime())) return 'Yesterday';
    return d.toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
  }

  function daySeparator(ms) {
    const day = dayOf(ms);
    if (day === state.lastDay) return;
    state.lastDay = day;
    const li = document.createElement('li');
    li.className = 'day';
    li.dataset.testid = 'day-separator';
    li.textContent = dayLabel(ms);
    appendItem(li);
  }

  /** Shows one room event; `kept` marks one from the room's history. */
  function addEvent(ev, kept) {
    daySeparator(ev.timestamp);
    const li = document.createElement('li');
    if (kept) li.dataset.history = 'true';
    li.dataset.testid = 'message';
    li.dataset.type = String(ev.type);
    li.dataset.sender = String(ev.sender);
    if (ev.type === 'CHAT') {
      li.className = ev.sender === state.username ? 'msg mine' : 'msg';
      const meta = document.createElement('div');
      meta.className = 'meta';
      const sender = document.createElement('span');
      sender.className = 'sender';
      sender.dataset.testid = 'message-sender';
      sender.textContent = String(ev.sender);
      const time = document.createElement('time');
      time.textContent = timeOf(ev.timestamp);
      meta.append(sender, time);
      const text = document.createElement('div');
      text.className = 'text';
      text.dataset.testid = 'message-text';
      text.textContent = String(ev.message ?? '');
      li.append(meta, text);
    } else {
      li.className = 'notice';
      const verb = ev.type === 'JOIN' ? 'joined' : ev.type === 'LEAVE' ? 'left' : String(ev.type).toLowerCase();
      li.textContent = `${ev.sender} ${verb} · ${timeOf(ev.timestamp)}`;
    }
    appendItem(li);
  }

  function notice(text, kind) {
    if (!state.room) return;
    const li = document.createElement('li');
    li.className = 'notice ' + (kind || '');
    li.dataset.testid = 'notice';
    if (kind) li.dataset.kind = kind;
    li.textContent = text;
    appendItem(li);
  }

  function showError(code, message, destination) {
    const li = document.createElement('li');
    li.dataset.testid = 'error';
    li.dataset.code = code;
    li.title = destination ? 'from ' + destination + ' (click to dismiss)' : 'click to dismiss';
    const c = document.createElement('code');
    c.textContent = code;
    li.append(c, document.createTextNode(message));
    li.addEventListener('click', () => li.remove());
    ui.errors.append(li);
    while (ui.errors.childElementCount > 3) ui.errors.firstElementChild.remove();
    setTimeout(() => li.remove(), ERROR_SHOW_MS);
  }

  // ---------------------------------------------------------------------------------------------
  // Forms

  function validUsername(name) {
    const chars = [...name].length;
    if (chars < 1) return 'Enter a name.';
    if (chars > MAX_USERNAME_CHARS) return `At most ${MAX_USERNAME_CHARS} characters.`;
    if (CONTROL_RE.test(name)) return 'No control characters.';
    return null;
  }

  function setFieldError(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  }

  function start(name) {
    state.username = name;
    ui.me.textContent = name;
    ui.me.hidden = false;
    ui.nameView.hidden = true;
    ui.chatView.hidden = false;
    store(STORE.name, name);
    ui.roomInput.focus();
    refreshRooms();
  }

  ui.nameForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = ui.nameInput.value.trim();
    const problem = validUsername(name);
    setFieldError(ui.nameError, problem);
    if (!problem) start(name);
  });

  ui.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const roomId = ui.roomInput.value.trim();
    const ok = ROOM_ID_RE.test(roomId);
    setFieldError(ui.roomInputError, ok ? null : 'A room id is 1–64 letters, digits, "_" or "-".');
    if (!ok) return;
    ui.roomInput.value = '';
    joinRoom(roomId);
  });

  ui.messageForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.messageInput.value;
    if (!state.room || text.trim() === '') return;
    if (new TextEncoder().encode(text).length > MAX_MESSAGE_BYTES) {
      showError('invalid_message', `A message is at most ${MAX_MESSAGE_BYTES} bytes.`);
      return;
    }
    if (!client.connected) {
      showError('offline', 'Not connected: the message was not sent.');
      return;
    }
    client.publish({
      destination: '/app/room/' + state.room + '/message',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ message: text }),
    });
    ui.messageInput.value = '';
  });

  ui.leave.addEventListener('click', leaveRoom);
  ui.showRooms.addEventListener('click', () => showRoomsOnPhone(true));

  // ---------------------------------------------------------------------------------------------
  // Start

  // Arrived from a board that died: take over its name, room and stream position.
  const handover = /^#failover=(.*)$/.exec(location.hash);
  if (handover) {
    try {
      const carry = JSON.parse(decodeURIComponent(handover[1]));
      if (carry && typeof carry.name === 'string') store(STORE.name, carry.name);
      if (carry && typeof carry.room === 'string') store(STORE.room, carry.room);
      if (carry && carry.position) store(STORE.position, carry.position);
    } catch (_) {
      /* a bad fragment: start as a new page */
    }
    history.replaceState(null, '', location.pathname);
  }

  const saved = load(STORE.name);
  if (saved && !validUsername(saved)) {
    start(saved);
    // A reload: back into the room, its history shown again, from where the page was.
    const room = load(STORE.room);
    if (room && ROOM_ID_RE.test(room)) {
      try {
        const p = JSON.parse(load(STORE.position) || 'null');
        if (p && p.room === room && typeof p.epoch === 'string' && Number.isInteger(p.next)) state.restored = p;
      } catch (_) {
        /* a bad saved position: the history shows without the check */
      }
      state.room = room;
      renderRoom(true);
    }
  } else ui.nameInput.focus();

  setInterval(() => {
    if (state.username && client.connected) {
      refreshRooms();
      refreshNodes();
    }
  }, ROOMS_POLL_MS);
  refreshNodes();
  client.activate();
})();
