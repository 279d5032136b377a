// display.js - the graphical console: noVNC over the VNC WebSocket
// (GET /api/v1/vms/{name}/vnc, which kvmhostd relays to QEMU's VNC unix
// socket). Loaded lazily, like the serial console.
import RFB from '@novnc/novnc';
import { vmPath } from './api.js';

export function mountDisplay(el, name, onStatus) {
  let rfb = null;
  let disposed = false;

  function connect() {
    if (disposed || rfb) return;
    onStatus('connecting');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const r = new RFB(el, `${proto}//${location.host}${vmPath(name, '/vnc')}`, { wsProtocols: [] });
    r.scaleViewport = true;
    r.resizeSession = false;
    r.focusOnClick = true;
    r.addEventListener('connect', () => onStatus('connected'));
    r.addEventListener('disconnect', (e) => {
      if (rfb === r) rfb = null;
      if (!disposed) onStatus(e.detail && e.detail.clean ? 'disconnected' : 'connection lost');
    });
    r.addEventListener('desktopname', (e) => el.setAttribute('aria-label', `Display of ${name}: ${e.detail.name}`));
    rfb = r;
  }

  return {
    connect,
    ctrlAltDel() { if (rfb) rfb.sendCtrlAltDel(); },
    focus() { if (rfb) rfb.focus(); },
    dispose() {
      disposed = true;
      if (rfb) {
        const r = rfb;
        rfb = null;
        try { r.disconnect(); } catch { /* already gone */ }
      }
    },
  };
}
