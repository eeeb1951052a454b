"use strict";
// The instance's one connection to iapflow, shared by the storage module, the editor sign-in
// and the nodes. settings.js configures it; the first user waits until it is signed in.

const { Client } = require("./client");

// Kept on the global object, so that two copies of this package in one process (one required
// by settings.js, one found by Node-RED's node scan) share one connection.
const KEY = Symbol.for("node-red-iapflow.connection");
const state = globalThis[KEY] || (globalThis[KEY] = { options: null, client: null, ready: null });

/** Where and as whom to connect: {url, jwt, username, password}. Replaces an earlier client. */
function configure(next) {
    if (state.client) state.client.close();
    state.options = Object.assign({}, next);
    state.client = null;
    state.ready = null;
}

function configured() {
    return state.options !== null && !!state.options.url;
}

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The signed-in client. While the server cannot be reached it tries again every second (a
 * Node-RED instance may start before iapflow does); a refused sign-in fails at once.
 */
function get() {
    if (!configured()) {
        return Promise.reject(new Error(
            "iapflow is not configured: set iapflow.url (or the api_ws_url environment variable) " +
            "and iapflow.jwt (or jwt) in the Node-RED settings"));
    }
    if (state.ready) return state.ready;
    state.client = new Client(Object.assign({ agent: "nodered" }, state.options));
    const current = state.client;
    state.ready = (async () => {
        for (let attempt = 1; ; attempt++) {
            try {
                await current.connect();
                return current;
            } catch (err) {
                if (err && err.name === "ReplyError") throw err;
                if (attempt === 1 || attempt % 30 === 0) {
                    console.warn(`[iapflow] cannot reach ${state.options.url} (${err.message}); trying again`);
                }
                await sleep(1000);
                if (state.client !== current) throw new Error("iapflow connection was reconfigured");
            }
        }
    })();
    state.ready.catch(() => { if (state.client === current) state.ready = null; });
    return state.ready;
}

/** Close the shared connection (tests, shutdown). */
async function close() {
    const current = state.client;
    state.client = null;
    state.ready = null;
    if (current) await current.close();
}

module.exports = { configure, configured, get, close };
