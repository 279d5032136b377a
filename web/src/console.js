// console.js - the serial console in xterm.js over the console WebSocket
// (GET /api/v1/vms/{name}/console, binary frames both ways). Loaded lazily:
// xterm.js is most of the JavaScript, and only this tab needs it.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { vmPath } from './api.js';

const enc = new TextEncoder();

// Mount a terminal in el for the VM; returns { connect(), dispose() }.
// connect() shows the log so far, then follows the live output; it is
// called again when the VM starts while the tab is open.
export function mountConsole(el, name, onStatus) {
  const term = new Terminal({
    convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    theme: { background: '#101418', foreground: '#dfe6ee' },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  const textarea = el.querySelector('textarea');
  if (textarea) textarea.setAttribute('aria-label', `Serial console of ${name}`);
  const doFit = () => { try { fit.fit(); } catch { /* hidden */ } };
  doFit();
  const ro = new ResizeObserver(doFit);
  ro.observe(el);
  let ws = null;
  let disposed = false;
  term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });

  async function connect() {
    if (disposed || (ws && ws.readyState <= WebSocket.OPEN)) return;
    onStatus('connecting');
    try {
      const r = await fetch(vmPath(name, '/console/log?tail=65536'), { credentials: 'same-origin', cache: 'no-store' });
      if (r.ok) {
        const buf = new Uint8Array(await r.arrayBuffer());
        term.reset();
        if (buf.length) term.write(buf);
      }
    } catch { /* the live part still works */ }
    if (disposed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const sock = new WebSocket(`${proto}//${location.host}${vmPath(name, '/console')}`);
    sock.binaryType = 'arraybuffer';
    ws = sock;
    sock.onopen = () => { onStatus('connected'); term.focus(); };
    sock.onmessage = (e) => term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
    sock.onclose = () => {
      if (ws === sock) ws = null;
      if (!disposed) {
        term.write('\r\n\x1b[2m[console closed]\x1b[0m\r\n');
        onStatus('closed');
      }
    };
  }

  return {
    connect,
    focus: () => term.focus(),
    dispose() {
      disposed = true;
      ro.disconnect();
      if (ws) ws.close();
      term.dispose();
    },
  };
}
