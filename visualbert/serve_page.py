"""The web page ``visualbert.serve`` shows: drop an image, ask, see the answers as bars and where it looked.

Kept as a module (not a data file) so an installed package always has it.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>VisualBERT: ask about an image</title>
<style>
  body { font-family: sans-serif; max-width: 760px; margin: 2em auto; color: #222; }
  #drop { border: 2px dashed #888; border-radius: 8px; padding: 1.2em; text-align: center; cursor: pointer; }
  #drop.over { background: #eef4ff; border-color: #36c; }
  #preview { max-width: 240px; max-height: 240px; display: none; margin: 0.8em auto 0; }
  form { display: flex; gap: 0.5em; margin: 1em 0; }
  #question { flex: 1; padding: 0.5em; font-size: 1em; }
  button { padding: 0.5em 1.2em; font-size: 1em; }
  .row { display: flex; align-items: center; gap: 0.6em; margin: 0.25em 0; }
  .label { width: 9em; text-align: right; }
  .bar { background: #36c; height: 1.1em; border-radius: 3px; }
  .score { font-variant-numeric: tabular-nums; color: #555; }
  #error { color: #b00; }
  #explain { max-width: 100%; display: none; margin-top: 1em; }
</style>
</head>
<body>
<h1>Ask about an image</h1>
<div id="drop">Drop an image here, or click to choose one
  <input id="image" type="file" accept="image/*" style="display:none">
  <img id="preview" alt="the chosen image">
</div>
<form id="ask-form">
  <input id="question" type="text" placeholder="What is in the picture?" maxlength="500" autocomplete="off">
  <button id="ask" type="submit">Ask</button>
</form>
<p id="status"></p>
<p id="error"></p>
<p>Top answer: <strong id="top-answer"></strong></p>
<div id="answers"></div>
<img id="explain" alt="where the answer looked">
<script>
const input = document.getElementById("image");
const drop = document.getElementById("drop");
const preview = document.getElementById("preview");
function show(file) {
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
}
drop.addEventListener("click", (e) => { if (e.target !== input) input.click(); });
input.addEventListener("change", () => show(input.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(input.files[0]); }
});
document.getElementById("ask-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("error"), status = document.getElementById("status");
  const answers = document.getElementById("answers"), top = document.getElementById("top-answer");
  const explain = document.getElementById("explain");
  error.textContent = ""; answers.innerHTML = ""; top.textContent = ""; explain.style.display = "none";
  if (!input.files.length) { error.textContent = "choose an image first"; return; }
  const form = new FormData();
  form.append("image", input.files[0]);
  form.append("question", document.getElementById("question").value);
  form.append("explain", "1");
  status.textContent = "thinking...";
  try {
    const response = await fetch("/v1/vqa", { method: "POST", body: form });
    const body = await response.json();
    status.textContent = "";
    if (!response.ok) { error.textContent = body.error || ("error " + response.status); return; }
    for (const a of body.answers) {
      const row = document.createElement("div");
      row.className = "row answer";
      const label = document.createElement("span");
      label.className = "label"; label.textContent = a.answer;
      const bar = document.createElement("div");
      bar.className = "bar"; bar.style.width = Math.max(1, Math.round(a.score * 400)) + "px";
      const score = document.createElement("span");
      score.className = "score"; score.textContent = a.score.toFixed(3);
      row.append(label, bar, score);
      answers.append(row);
    }
    top.textContent = body.answers[0].answer;
    if (body.explain_png) { explain.src = "data:image/png;base64," + body.explain_png; explain.style.display = "block"; }
  } catch (err) {
    status.textContent = ""; error.textContent = "request failed: " + err;
  }
});
</script>
</body>
</html>
"""
