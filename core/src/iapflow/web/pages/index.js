// Every page of the web interface, one import per page. A page module registers itself
// (registry.js): adding a page is one new file in this folder and one line here.
import "./signin.js";
import "./entities.js";
import "./entity.js";
import "./deleted.js";
import "./users.js";
import "./user.js";
import "./files.js";
import "./file.js";
import "./clients.js";
import "./audit.js";
import "./config.js";
import "./plugins.js";
import "./queues.js";
import "./queue.js";
import "./workitems.js";
import "./workitemqueue.js";
import "./workitem.js";
import "./agents.js";
import "./placeholders.js";
