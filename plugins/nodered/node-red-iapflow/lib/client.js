"use strict";
// A small client for iapflow's JSON websocket protocol (docs/protocol-json.md): requests
// matched to replies by id, messages in pieces both ways, queue and watch pushes, token
// refresh, and reconnecting with the same sign-in, queues and watches after a drop.

const { EventEmitter } = require("events");
const crypto = require("crypto");
const WebSocket = require("ws");

const DEFAULT_TIMEOUT_MS = 30000;
const MAX_BACKOFF_MS = 5000;

class ReplyError extends Error {
    /** The server answered with an `error` message; `data` is the whole reply. */
    constructor(message, data) {
        super(message);
        this.name = "ReplyError";
        this.data = data;
    }
}

function newId() {
    return crypto.randomBytes(12).toString("hex");
}

class Client extends EventEmitter {
    /**
     * @param {object} options
     * @param {string} options.url  websocket URL, e.g. ws://127.0.0.1:3000/ws
     * @param {string} [options.jwt]  sign in with this token ...
     * @param {string} [options.username] ... or with this username and password
     * @param {string} [options.password]
     * @param {string} [options.agent]  clientagent sent at sign-in (default "nodered")
     * @param {boolean} [options.reconnect]  reconnect after a drop (default true)
     * @param {number} [options.timeout]  milliseconds a request waits for its reply
     */
    constructor(options) {
        super();
        if (!options || typeof options.url !== "string" || !options.url) {
            throw new Error("iapflow client: url is required (ws://host:port/ws)");
        }
        this.url = options.url;
        this.jwt = options.jwt || "";
        this.username = options.username || "";
        this.password = options.password || "";
        this.agent = options.agent || "nodered";
        this.reconnect = options.reconnect !== false;
        this.timeout = options.timeout || DEFAULT_TIMEOUT_MS;
        this.user = null;
        this.packageSize = 25000;
        this.ws = null;
        this.connected = false;
        this.closing = false;
        this._pending = new Map(); // id -> {resolve, reject, timer}
        this._pieces = new Map(); // id -> {count, parts}
        this._queues = new Map(); // name asked for -> {name, handler}
        this._watches = new Map(); // our key -> {id, collectionname, paths, handler}
        this._ready = null;
        this._backoff = 100;
        this._replyQueue = null;
        this._everConnected = false;
        this._rpcWaiting = new Map(); // correlationId -> {resolve, reject, timer}
        this.on("error", () => {}); // errors are also returned to callers; never crash Node-RED
    }

    /** Open the connection and sign in; resolves with the signed-in user. */
    connect() {
        if (this._ready) return this._ready;
        this.closing = false;
        this._ready = this._open();
        this._ready.catch(() => { this._ready = null; });
        return this._ready;
    }

    _open() {
        return new Promise((resolve, reject) => {
            const ws = new WebSocket(this.url, { perMessageDeflate: false });
            this.ws = ws;
            let opened = false;
            let refused = false;
            ws.on("open", async () => {
                opened = true;
                this.connected = true;
                try {
                    await this._signin();
                    await this._restore();
                    this._backoff = 100;
                    this._everConnected = true;
                    this.emit("connected", this.user);
                    resolve(this.user);
                } catch (err) {
                    refused = true; // a refused sign-in is not retried by this attempt
                    reject(err);
                    ws.close();
                }
            });
            ws.on("message", (raw, binary) => {
                if (!binary) this._onFrame(raw.toString());
            });
            ws.on("error", (err) => {
                this.emit("error", err);
                if (!opened) reject(err);
            });
            ws.on("close", (code, reason) => {
                this.connected = false;
                const err = new Error(`connection closed (${code} ${reason || ""})`.trim());
                for (const [id, pending] of this._pending) {
                    clearTimeout(pending.timer);
                    pending.reject(err);
                    this._pending.delete(id);
                }
                this.emit("disconnected", code);
                if (opened && !refused && this.reconnect && !this.closing) this._scheduleReconnect();
            });
        });
    }

    _scheduleReconnect() {
        const delay = this._backoff;
        this._backoff = Math.min(MAX_BACKOFF_MS, this._backoff * 2);
        setTimeout(() => {
            if (this.closing) return;
            this._ready = this._open();
            this._ready.catch((err) => {
                this.emit("error", err);
                if (this.reconnect && !this.closing) this._scheduleReconnect();
            });
        }, delay).unref();
    }

    async _signin() {
        const data = { clientagent: this.agent, clientversion: require("../package.json").version };
        if (this.jwt) data.jwt = this.jwt;
        else if (this.username) Object.assign(data, { username: this.username, password: this.password });
        else return null;
        const reply = await this.request("signin", data);
        this.jwt = reply.jwt;
        this.user = reply.user;
        if (reply.websocket_package_size) this.packageSize = reply.websocket_package_size;
        return reply.user;
    }

    /** Register queues and watches again after a reconnect. */
    async _restore() {
        for (const entry of this._queues.values()) {
            const reply = await this.request("registerqueue", { queuename: entry.asked });
            entry.name = reply.queuename;
        }
        for (const entry of this._watches.values()) {
            const reply = await this.request("watch", { collectionname: entry.collectionname, paths: entry.paths });
            entry.id = reply.id;
        }
    }

    /** Close for good (no reconnect). */
    async close() {
        this.closing = true;
        this._ready = null;
        for (const waiting of this._rpcWaiting.values()) clearTimeout(waiting.timer);
        this._rpcWaiting.clear();
        const ws = this.ws;
        if (!ws || ws.readyState === WebSocket.CLOSED) return;
        await new Promise((resolve) => {
            ws.once("close", resolve);
            ws.close();
            setTimeout(resolve, 2000).unref();
        });
    }

    _send(frame) {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
            throw new Error("not connected to iapflow at " + this.url);
        }
        this.ws.send(JSON.stringify(frame));
    }

    /**
     * Send `command` with `data` (an object) and resolve with the reply's data; reject with a
     * ReplyError when the server answers `error`, or an Error on timeout or disconnect. While
     * the client is reconnecting, the request waits (up to its timeout) until it is back.
     */
    request(command, data, options) {
        const open = this.ws && this.ws.readyState === WebSocket.OPEN;
        if (!open && this._everConnected && this.reconnect && !this.closing) {
            const timeout = (options && options.timeout) || this.timeout;
            return new Promise((resolve, reject) => {
                const timer = setTimeout(() => {
                    this.removeListener("connected", onConnected);
                    reject(new Error(`${command}: not connected to iapflow at ${this.url} within ${timeout} ms`));
                }, timeout);
                timer.unref();
                const onConnected = () => {
                    clearTimeout(timer);
                    this._sendRequest(command, data, options).then(resolve, reject);
                };
                this.once("connected", onConnected);
            });
        }
        return this._sendRequest(command, data, options);
    }

    _sendRequest(command, data, options) {
        const timeout = (options && options.timeout) || this.timeout;
        const id = newId();
        const text = JSON.stringify(data || {});
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this._pending.delete(id);
                reject(new Error(`${command}: no reply from iapflow within ${timeout} ms`));
            }, timeout);
            timer.unref();
            this._pending.set(id, { resolve, reject, timer });
            try {
                const size = this.packageSize || text.length || 1;
                const count = Math.max(1, Math.ceil(text.length / size));
                for (let index = 0; index < count; index++) {
                    const piece = text.slice(index * size, (index + 1) * size);
                    this._send({ id, replyto: null, command, data: piece, count, index });
                }
            } catch (err) {
                clearTimeout(timer);
                this._pending.delete(id);
                reject(err);
            }
        });
    }

    _onFrame(text) {
        let frame;
        try {
            frame = JSON.parse(text);
        } catch (err) {
            this.emit("error", new Error("iapflow sent a frame that is not JSON"));
            return;
        }
        let data = frame.data || "";
        const count = frame.count || 1;
        if (count > 1) {
            let entry = this._pieces.get(frame.id);
            if (!entry) {
                entry = { count, parts: new Map() };
                this._pieces.set(frame.id, entry);
            }
            entry.parts.set(frame.index || 0, data);
            if (entry.parts.size < count) return;
            data = "";
            for (let i = 0; i < count; i++) data += entry.parts.get(i) || "";
            this._pieces.delete(frame.id);
        }
        let body = {};
        try {
            body = data ? JSON.parse(data) : {};
        } catch (err) {
            body = {};
        }
        if (frame.replyto && this._pending.has(frame.replyto)) {
            const pending = this._pending.get(frame.replyto);
            this._pending.delete(frame.replyto);
            clearTimeout(pending.timer);
            if (frame.command === "error") {
                pending.reject(new ReplyError(String(body.message || body.error || "error"), body));
            } else {
                pending.resolve(body);
            }
            return;
        }
        this._onPush(frame.command, body, frame.id);
    }

    _answer(pushId, command, data) {
        try {
            this._send({ id: newId(), replyto: pushId, command, data: JSON.stringify(data || {}) });
        } catch (err) {
            this.emit("error", err);
        }
    }

    async _onPush(command, body, pushId) {
        if (command === "refreshtoken") {
            if (body.jwt) this.jwt = body.jwt;
            if (body.user) this.user = body.user;
            this.emit("token", this.jwt);
        } else if (command === "watchevent") {
            for (const entry of this._watches.values()) {
                if (entry.id === body.id) {
                    try {
                        await entry.handler(body.result);
                    } catch (err) {
                        this.emit("error", err);
                    }
                }
            }
        } else if (command === "queuemessage") {
            await this._onQueueMessage(body, pushId);
        } else {
            this.emit("push", command, body, pushId);
        }
    }

    async _onQueueMessage(body, pushId) {
        if (this._replyQueue && body.queuename === this._replyQueue.name && this._rpcWaiting.has(body.correlationId)) {
            const waiting = this._rpcWaiting.get(body.correlationId);
            this._rpcWaiting.delete(body.correlationId);
            clearTimeout(waiting.timer);
            this._answer(pushId, "queuemessage", {});
            if (body.data && body.data.command === "timeout") waiting.reject(new Error("the request timed out: no one answered"));
            else waiting.resolve(body);
            return;
        }
        const entry = [...this._queues.values()].find((q) => q.name === body.queuename);
        if (!entry) {
            this._answer(pushId, "queuemessage", {});
            return;
        }
        try {
            await entry.handler(body);
            this._answer(pushId, "queuemessage", {});
        } catch (err) {
            // An error answer puts the message back on the queue.
            this._answer(pushId, "error", { message: String(err && err.message || err) });
        }
    }

    // -- queues --------------------------------------------------------------------------------

    /**
     * Consume `queuename` (empty: a new temporary queue). `handler(message)` gets the push data
     * ({queuename, data, replyto, correlationId, ...}); when it returns the message is
     * acknowledged, when it throws the message goes back. Resolves with the queue's name.
     */
    async registerQueue(queuename, handler) {
        const reply = await this.request("registerqueue", { queuename: queuename || "" });
        const key = newId();
        this._queues.set(key, { asked: queuename || "", name: reply.queuename, handler, key });
        return reply.queuename;
    }

    /** Stop consuming a queue this client registered. */
    async closeQueue(queuename) {
        for (const [key, entry] of this._queues) {
            if (entry.name === queuename) this._queues.delete(key);
        }
        if (this.connected) await this.request("closequeue", { queuename });
    }

    /** Send a message: {queuename | exchangename+routingkey, data, replyto, correlationId, expiration, striptoken}. */
    queueMessage(message) {
        return this.request("queuemessage", message);
    }

    /** Send `data` to `queuename` and resolve with the reply message ({data, correlationId, ...}). */
    async rpc(queuename, data, options) {
        const timeout = (options && options.timeout) || this.timeout;
        if (!this._replyQueue) {
            const name = await this.registerQueue("", async () => {});
            this._replyQueue = [...this._queues.values()].find((q) => q.name === name);
        }
        const correlationId = newId();
        const reply = new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this._rpcWaiting.delete(correlationId);
                reject(new Error(`no reply from queue ${queuename} within ${timeout} ms`));
            }, timeout);
            timer.unref();
            this._rpcWaiting.set(correlationId, { resolve, reject, timer });
        });
        await this.queueMessage({
            queuename, data, replyto: this._replyQueue.name, correlationId,
            expiration: timeout, striptoken: options && options.striptoken,
        });
        return reply;
    }

    // -- watches -------------------------------------------------------------------------------

    /** Watch a collection; `handler(change)` gets each watchevent's result. Resolves with a key for unwatch. */
    async watch(collectionname, paths, handler) {
        const data = { collectionname };
        if (paths && paths.length) data.paths = paths;
        const reply = await this.request("watch", data);
        const key = newId();
        this._watches.set(key, { id: reply.id, collectionname, paths: data.paths, handler });
        return key;
    }

    /** End a watch started with watch(). */
    async unwatch(key) {
        const entry = this._watches.get(key);
        if (!entry) return;
        this._watches.delete(key);
        if (this.connected) await this.request("unwatch", { id: entry.id });
    }

    // -- documents and work items --------------------------------------------------------------

    /** Check credentials without changing who this connection is: {username, password} or {jwt}. */
    validate(credentials) {
        return this.request("signin", Object.assign({ validate_only: true }, credentials));
    }

    async query(collectionname, query, options) {
        const reply = await this.request("query", Object.assign({ collectionname, query: query || {} }, options || {}));
        return reply.result;
    }

    async insertOne(collectionname, item) {
        return (await this.request("insertone", { collectionname, item })).result;
    }

    async updateOne(collectionname, item, query) {
        const data = { collectionname, item };
        if (query) data.query = query;
        return (await this.request("updateone", data)).result;
    }

    async insertOrUpdateOne(collectionname, item, uniqeness) {
        return (await this.request("insertorupdateone", { collectionname, item, uniqeness: uniqeness || "_id" })).result;
    }

    async deleteOne(collectionname, id) {
        return (await this.request("deleteone", { collectionname, id })).affectedrows;
    }

    async aggregate(collectionname, aggregates) {
        return (await this.request("aggregate", { collectionname, aggregates })).result;
    }

    async pushWorkitem(data) {
        return (await this.request("pushworkitem", data)).result;
    }

    async popWorkitem(wiq) {
        return (await this.request("popworkitem", { wiq })).result || null;
    }

    async updateWorkitem(data) {
        return (await this.request("updateworkitem", data)).result;
    }
}

module.exports = { Client, ReplyError };
