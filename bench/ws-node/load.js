// WebSocket echo load (bench/compare_ws.py): node load.js URL CONNS SECONDS KIND
// Each connection sends a message, waits for its echo, sends the next (closed loop); KIND is
// "json" (a 60-byte JSON text) or "1k" (1 KiB binary). Prints the messages echoed.
const WebSocket = require("ws");
const [url, conns, seconds, kind] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const msg = kind === "json" ? JSON.stringify({ id: 12345, op: "update", path: "/a/b", value: [1, 2, 3] }) : Buffer.alloc(1024, 7);
let done = 0, open = 0, stop = false;
const start = () => {
  setTimeout(() => { stop = true; console.log(JSON.stringify({ messages: done, seconds })); process.exit(0); }, seconds * 1000);
};
for (let i = 0; i < conns; i++) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on("open", () => { if (++open === conns) start(); ws.send(msg); });
  ws.on("message", () => { if (stop) return; done++; ws.send(msg); });
  ws.on("error", (e) => { console.error("error", e.message); process.exit(1); });
}
