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

// `?sealed=1`: the holder's state is sealed at rest under a 32-byte key
// that is kept wrapped (AES-GCM) under a non-extractable WebCrypto key, both
// in an IndexedDB database of their own. Script on this origin can still
// use the key (it can unwrap it), but nobody can export the wrapping key,
// and the holder's database alone reveals nothing. A passphrase (PBKDF2)
// or a WebAuthn PRF would protect it from the origin's own script too (see
// docs/web.md).
async function atRestKey() {
  if ((params.get("sealed") ?? localStorage.getItem("sealed")) !== "1") return undefined;
  const request = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const open = indexedDB.open(`${dbName}-at-rest-key`, 1);
  open.onupgradeneeded = () => open.result.createObjectStore("keys");
  const db = await request(open);
  const read = db.transaction("keys").objectStore("keys");
  let [wrapping, wrapped] = await Promise.all([request(read.get("wrapping")), request(read.get("wrapped"))]);
  if (!wrapping || !wrapped) {
    wrapping = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const key = crypto.getRandomValues(new Uint8Array(32));
    wrapped = { iv, sealed: await crypto.subtle.encrypt({ name: "AES-GCM", iv }, wrapping, key) };
    key.fill(0);
    const write = db.transaction("keys", "readwrite", { durability: "strict" });
    write.objectStore("keys").put(wrapping, "wrapping");
    write.objectStore("keys").put(wrapped, "wrapped");
    await new Promise((resolve, reject) => {
      write.oncomplete = resolve;
      write.onerror = () => reject(write.error);
      write.onabort = () => reject(write.error);
    });
  }
  db.close();
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: wrapped.iv }, wrapping, wrapped.sealed));
}

async function main() {
  await init();
  const key = await atRestKey();
  const holder = await WebHolder.open(dbName, step, key);
  key?.fill(0);
  if (key) step("state sealed at rest (key unwrapped with a non-extractable WebCrypto key)");
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
