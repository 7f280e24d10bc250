// The web holder's page: a thin view over WebHolder (crates/confidant-web).
// Every step the holder takes is shown as a line, as the terminal holder
// prints them. `window.confidant` is what the end-to-end test reads.
import init, { WebHolder } from "./pkg/confidant_web.js";

const params = new URLSearchParams(location.search);
const dbName = params.get("db") ?? "confidant-web-holder";
// `?delivery=poll` (or `delivery` = `poll` in localStorage): pages of
// GetMessagesPaginated instead of the stream.
const poll = (params.get("delivery") ?? localStorage.getItem("delivery")) === "poll";
const $ = (id) => document.getElementById(id);

const confidant = { steps: [], holder: null, ready: null };
window.confidant = confidant;

let refreshing = null;
function refreshSoon() {
  if (refreshing) return;
  refreshing = setTimeout(async () => {
    refreshing = null;
    await refresh();
  }, 200);
}

function step(line) {
  confidant.steps.push(line);
  const row = document.createElement("div");
  row.textContent = line;
  if (/^(REFUSED|error|could not)/.test(line)) row.className = "error";
  $("steps").append(row);
  $("steps").scrollTop = $("steps").scrollHeight;
  refreshSoon();
}

function failure(error) {
  return `error (${error?.kind ?? "unexpected"}): ${error?.message ?? error}`;
}

async function refresh() {
  const holder = confidant.holder;
  if (!holder) return;
  const credentials = await holder.credentials();
  $("count").textContent = String(credentials.length);
  $("credentials").replaceChildren(
    ...credentials.map((credential) => {
      const row = document.createElement("tr");
      for (const [text, cls] of [
        [String(credential.sequence), ""],
        [credential.connectionId, ""],
        [credential.json, "json"],
        [credential.replied ? "yes" : "not yet", ""],
      ]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (cls) cell.className = cls;
        row.append(cell);
      }
      return row;
    }),
  );
  const connections = await holder.connections();
  $("connections").replaceChildren(
    ...connections.map((connection) => {
      const item = document.createElement("li");
      item.textContent = `${connection.connectionId}: ${connection.state}` +
        (connection.peerIdentity ? ` (issuer ${connection.peerIdentity.slice(0, 16)}…)` : "");
      return item;
    }),
  );
}

async function main() {
  await init();
  const holder = await WebHolder.open(dbName, step);
  $("identity").textContent = holder.identityKey;
  // What IndexedDB held when the page opened, before any delivery.
  confidant.storedAtOpen = (await holder.credentials()).length;
  for (const connection of await holder.connections()) {
    step(`connection ${connection.connectionId}: ${connection.state}`);
  }
  // Continues every stored connection (nothing to do on a first visit).
  confidant.holder = holder;
  holder.start(poll);
  $("accept").addEventListener("click", async () => {
    const text = $("invitation").value;
    $("accept").disabled = true;
    try {
      await holder.acceptInvitation(text);
      $("invitation").value = "";
    } catch (error) {
      step(failure(error));
    } finally {
      $("accept").disabled = false;
    }
  });
  $("time").addEventListener("click", () => {
    const lines = [];
    for (const [bytes, messages] of [[64, 20000], [1024, 10000], [16384, 2000]]) {
      WebHolder.timeSealOpen(bytes, 2000); // warm-up
      const t = WebHolder.timeSealOpen(bytes, messages);
      lines.push(`${t.suite} ${bytes} B: seal ${t.sealNs.toFixed(0)} ns/msg, open ${t.openNs.toFixed(0)} ns/msg`);
    }
    $("timing").textContent = lines.join("\n");
  });
  await refresh();
}

confidant.ready = main().catch((error) => {
  step(`could not start: ${failure(error)}`);
  throw error;
});
