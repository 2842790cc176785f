// Shared by the Node peers: the control API and the broadcast timer (same contract as peers/*.py).
// GET /ctl/status -> {"clients": n, "sent": k, "running": bool}
// GET /ctl/start?rate=R&count=C -> starts C broadcasts at R per second (absolute schedule, no drift)
// GET /ctl/stop -> stops the current run (a peer that cannot keep the rate)
'use strict';
// text = "s<scheduled ms>." + padding: the client also measures lateness against the schedule
function announcement(seq, sched) {
  const head = 's' + Math.round(sched) + '.';
  return JSON.stringify({ type: 'announcement', seq, ts: Date.now(), text: head + 'x'.repeat(Math.max(0, 80 - head.length)) });
}

function control(server, countClients, broadcast) {
  const state = { sent: 0, running: false, stop: false };
  server.on('request', (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (!url.pathname.startsWith('/ctl/')) return; // someone else (socket.io) answers
    const reply = (obj) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify(obj)); };
    if (url.pathname === '/ctl/status') return reply({ clients: countClients(), sent: state.sent, running: state.running });
    if (url.pathname === '/ctl/stop') { state.stop = true; return reply({ sent: state.sent }); }
    if (url.pathname === '/ctl/start') {
      const rate = Number(url.searchParams.get('rate') || 10);
      const count = Number(url.searchParams.get('count') || 100);
      if (state.running) return reply({ error: 'running' });
      state.running = true;
      state.stop = false;
      const t0 = Date.now();
      const first = state.sent + 1;
      const tick = () => {
        const k = state.sent - first + 1; // broadcasts done in this run
        if (k >= count || state.stop) { state.running = false; return; }
        broadcast(announcement(++state.sent, t0 + (k * 1000) / rate));
        const next = t0 + ((k + 1) * 1000) / rate;
        setTimeout(tick, Math.max(0, next - Date.now()));
      };
      setImmediate(tick);
      return reply({ first_seq: first, count });
    }
    res.writeHead(404); res.end();
  });
}

module.exports = { announcement, control };
