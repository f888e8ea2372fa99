// npm ws echo server (the peer in bench/compare_ws.py): node echo_server.js PORT
const { WebSocketServer } = require("ws");
const port = Number(process.argv[2] || 9201);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, maxPayload: 16 << 20 });
wss.on("connection", (ws) => ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary })));
wss.on("listening", () => console.log("listening", port));
