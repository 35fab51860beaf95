// The second floor: Node's `ws` room broadcast, the same behaviour as bench/floor_server.py.
//
// Each connection belongs to one room, chosen by the URL path /room/N or, on any other
// path, by the first message it sends (that message is not broadcast). Every later
// message is sent as received to every member of the sender's room, the sender included.
// No compression; GET /healthz answers 200 on the same port.
//
//     node bench/node/floor_server.js --port 9000
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const host = opt("--host", "127.0.0.1");
const port = Number(opt("--port", "9000"));

const rooms = new Map(); // room -> Set of sockets

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });

function join(ws, room) {
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const m of members) if (m.readyState === 1) m.send(data, { binary: isBinary });
  });
  ws.on("close", () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
}

wss.on("connection", (ws, req) => {
  ws.on("error", () => {});
  if (req.url.startsWith("/room/")) {
    join(ws, req.url.slice(6));
  } else {
    ws.once("message", (data) => join(ws, data.toString()));
  }
});

const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
server.listen({ host, port, backlog: 4096 });
