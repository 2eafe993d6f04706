// Student check-in (QR link page and one-time-code page): no framework, strings from the
// server's catalog for the browser's language, one tap once the browser is remembered.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const t = data.strings;
  const $ = (id) => document.getElementById(id);
  const form = $("form"), button = $("submit"), result = $("result");
  const pinfields = $("pinfields"), remembered = $("remembered"), notme = $("notme");
  // Error code -> [state, tone]; the state names the message in the catalog.
  const STATES = {
    stale_token: "expired", future_token: "invalid", invalid_token: "invalid",
    forged_token: "wrong_room", unknown_device: "wrong_room", wrong_code: "wrong_code",
    wrong_site: "wrong_site", bad_credentials: "bad_credentials", rate_limited: "rate_limited",
    duplicate: "duplicate", device_not_ready: "not_ready",
  };
  const TONES = {present: "ok", late: "warn", flagged: "warn", duplicate: "info"};

  function signedIn(on) {
    pinfields.classList.toggle("hidden", on);
    remembered.classList.toggle("hidden", !on);
    notme.classList.toggle("hidden", !on);
  }
  function show(state, values) {
    const tone = TONES[state] || "fail";
    let text = t["state_" + state] || t.state_error;
    for (const [key, value] of Object.entries(values || {})) text = text.replace("{" + key + "}", value);
    $("result-head").textContent = t["head_" + tone];
    $("result-text").textContent = text;
    result.className = "result " + tone;
    result.dataset.state = state;
    result.focus();
  }
  function field(id) { const el = $(id); return el ? el.value.trim() : ""; }

  signedIn(data.remembered);
  notme.addEventListener("click", () => { signedIn(false); $("student_id").focus(); });
  if (data.token === undefined) {
    const query = new URLSearchParams(location.search);
    for (const id of ["site", "room"]) if (query.get(id)) $(id).value = query.get(id);
  } else if (!data.valid) {
    show("invalid");
    button.disabled = true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = data.token === undefined
      ? {site: field("site"), room: field("room"), otp: field("otp")}
      : {token: data.token};
    if (!pinfields.classList.contains("hidden")) {
      body.student_id = field("student_id");
      body.pin = $("pin").value;
    }
    if (Object.values(body).some((value) => !value)) { show("missing"); return; }
    button.disabled = true;
    button.textContent = t.button_busy;
    try {
      const response = await fetch("/api/v1/checkins", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify(body), credentials: "same-origin",
      });
      const answer = await response.json();
      if (response.ok) {
        show(answer.checkin.status in TONES ? answer.checkin.status : "present");
        signedIn(true);
        notme.classList.add("hidden");
        button.classList.add("hidden");
        return;
      }
      const code = answer.error && answer.error.code;
      if (code === "bad_credentials") signedIn(false);
      const details = (answer.error && answer.error.details) || {};
      show(STATES[code] || "error", {seconds: details.retry_after_s || 60});
      if (code === "duplicate") button.classList.add("hidden");
    } catch (error) {
      show("network");
    } finally {
      button.disabled = false;
      button.textContent = t.button_checkin;
    }
  });
})();
