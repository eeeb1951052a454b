"use strict";
// node-red-iapflow: Node-RED on iapflow. See README in plugins/nodered and docs/agents.md.

module.exports = {
    Client: require("./lib/client").Client,
    ReplyError: require("./lib/client").ReplyError,
    connection: require("./lib/connection"),
    storage: require("./storage"),
    auth: require("./auth"),
    settings: require("./settings"),
};
