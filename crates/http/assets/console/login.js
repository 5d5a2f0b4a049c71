// The console's login page: posts the form as JSON, then opens the console.
"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  const body = {
    user: document.getElementById("user").value,
    password: document.getElementById("password").value,
  };
  try {
    const r = await fetch("/console/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (r.ok) {
      window.location.assign("/console/#overview");
      return;
    }
    const j = await r.json().catch(() => ({}));
    error.textContent = (j.error && j.error.message) || ("login failed (" + r.status + ")");
  } catch (e) {
    error.textContent = "login failed: " + e;
  }
});
