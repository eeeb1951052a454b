"use strict";
// Helpers shared by the nodes: run one request per message with a status dot, read JSON config
// fields, and pass a message's own jwt on so the command runs as that user.

const connection = require("./connection");

/** Parse a JSON text field of a node's config; an empty field gives `fallback`. */
function json(node, field, text, fallback) {
    if (text === undefined || text === null || text === "") return fallback;
    if (typeof text !== "string") return text;
    try {
        return JSON.parse(text);
    } catch (err) {
        throw new Error(`${field} is not valid JSON: ${err.message}`);
    }
}

/** The value of `msg[key]` if set, else the config's. */
function pick(msg, key, configured) {
    return msg[key] !== undefined && msg[key] !== null && msg[key] !== "" ? msg[key] : configured;
}

/**
 * Handle each input with `work(client, msg, request)`: `request(command, data)` sends a command
 * carrying msg.jwt when the message has one. The message is sent on unless `work` returns false.
 */
function onInput(node, work) {
    node.on("input", (msg, send, done) => {
        send = send || ((m) => node.send(m));
        done = done || ((err) => { if (err) node.error(err, msg); });
        node.status({ fill: "blue", shape: "dot", text: "working" });
        connection.get().then(async (client) => {
            const request = (command, data) => {
                const body = Object.assign({}, data);
                if (typeof msg.jwt === "string" && msg.jwt) body.jwt = msg.jwt;
                return client.request(command, body);
            };
            const result = await work(client, msg, request);
            node.status({});
            if (result !== false) send(Array.isArray(result) ? result : msg);
            done();
        }).catch((err) => {
            node.status({ fill: "red", shape: "ring", text: String(err.message || err).slice(0, 60) });
            msg.error = err.message || String(err);
            done(err);
        });
    });
}

/** Show on the node whether the shared connection is up. */
function trackConnection(node) {
    connection.get().then((client) => {
        const up = () => node.status({ fill: "green", shape: "dot", text: "connected" });
        const down = () => node.status({ fill: "red", shape: "ring", text: "disconnected" });
        client.on("connected", up);
        client.on("disconnected", down);
        node.on("close", () => {
            client.removeListener("connected", up);
            client.removeListener("disconnected", down);
        });
        if (client.connected) up();
    }, (err) => node.status({ fill: "red", shape: "ring", text: err.message.slice(0, 60) }));
}

module.exports = { json, pick, onInput, trackConnection, connection };
