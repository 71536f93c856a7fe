// The submit form: script or container, resources, inputs/outputs, priority, timeout, retries.
import { api } from "../api.js";
import { takeDraft } from "../draft.js";
import { field, h, pageTitle, toast } from "../ui.js";

const list = (text) =>
  text
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);

function num(input) {
  return input.value === "" ? undefined : Number(input.value);
}

function prefill(form, d) {
  const set = (name, value) => {
    if (value !== undefined && value !== null) form.elements[name].value = Array.isArray(value) ? value.join(name === "tags" ? ", " : "\n") : value;
  };
  const p = d.params || {};
  const r = d.resources || {};
  form.elements.type.value = d.type;
  set("name", d.name);
  set("script", p.script_content);
  set("interpreter", p.script_interpreter);
  set("image", p.docker_image);
  set("command", Array.isArray(p.docker_command) ? p.docker_command.join(" ") : p.docker_command);
  for (const k of ["gpu_count", "gpu_model", "min_vram_mb", "cpu", "memory_mb"]) set(k, r[k]);
  for (const k of ["priority", "timeout_seconds", "max_retries", "max_price_per_hour", "tags", "inputs", "outputs"]) set(k, d[k]);
}

export function render(main) {
  const name = h("input", { name: "name", required: true, maxlength: 128 });
  const typeScript = h("input", { type: "radio", name: "type", value: "script", id: "type-script", checked: true });
  const typeContainer = h("input", { type: "radio", name: "type", value: "container", id: "type-container" });
  const script = h("textarea", { name: "script", rows: 7, class: "mono", spellcheck: "false", placeholder: "echo hello from Dante\npython3 train.py" });
  const interp = h("input", { name: "interpreter", value: "bash" });
  const image = h("input", { name: "image", placeholder: "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime" });
  const command = h("input", { name: "command", placeholder: "python train.py --epochs 3" });
  const gpuCount = h("input", { name: "gpu_count", type: "number", min: 0, max: 64, value: 0 });
  const gpuModel = h("input", { name: "gpu_model", placeholder: "H100* (any if empty)" });
  const vram = h("input", { name: "min_vram_mb", type: "number", min: 0, placeholder: "0" });
  const cpu = h("input", { name: "cpu", type: "number", min: 0.1, step: 0.1, placeholder: "any" });
  const memory = h("input", { name: "memory_mb", type: "number", min: 1, placeholder: "any" });
  const priority = h("input", { name: "priority", type: "number", min: 0, max: 10, value: 5 });
  const timeout = h("input", { name: "timeout_seconds", type: "number", min: 1, placeholder: "none" });
  const retries = h("input", { name: "max_retries", type: "number", min: 0, max: 10, value: 3 });
  const maxPrice = h("input", { name: "max_price_per_hour", type: "number", min: 0, step: 0.01, placeholder: "no cap" });
  const tags = h("input", { name: "tags", placeholder: "nightly, resnet" });
  const inputs = h("textarea", { name: "inputs", rows: 2, class: "mono", placeholder: "datasets/train.csv" });
  const outputs = h("textarea", { name: "outputs", rows: 2, class: "mono", placeholder: "results/model.pt" });

  const scriptBox = h("fieldset", { class: "sub" }, h("legend", {}, "Script"), field("Script source", script, "Runs in a fresh work directory; write outputs under $DANTE_OUTPUTS_DIR."), field("Interpreter", interp));
  const containerBox = h("fieldset", { class: "sub", hidden: true }, h("legend", {}, "Container"), field("Image", image), field("Command", command));
  const syncType = () => {
    scriptBox.hidden = !typeScript.checked;
    containerBox.hidden = typeScript.checked;
  };
  typeScript.addEventListener("change", syncType);
  typeContainer.addEventListener("change", syncType);

  const err = h("p", { class: "form-error", role: "alert", hidden: true });
  const button = h("button", { class: "btn primary", type: "submit" }, "Submit job");
  const form = h(
    "form",
    { id: "submit-form", class: "stack" },
    h("div", { class: "cols" },
      h("div", {},
        field("Name", name),
        h("fieldset", { class: "radios" }, h("legend", {}, "Kind"),
          h("label", { for: "type-script" }, typeScript, " Script"),
          h("label", { for: "type-container" }, typeContainer, " Container")),
        scriptBox,
        containerBox,
      ),
      h("div", {},
        h("fieldset", { class: "sub grid2" }, h("legend", {}, "Resources"), field("GPUs", gpuCount), field("GPU model", gpuModel), field("Min. VRAM (MiB)", vram), field("CPUs", cpu), field("Memory (MiB)", memory), field("Max. price / h", maxPrice)),
        h("fieldset", { class: "sub grid2" }, h("legend", {}, "Scheduling"), field("Priority (0–10)", priority), field("Timeout (s)", timeout), field("Retries", retries), field("Tags", tags, "Comma-separated.")),
        h("fieldset", { class: "sub" }, h("legend", {}, "Data"), field("Inputs", inputs, "Storage keys, one per line; downloaded before the job."), field("Outputs", outputs, "Keys the job writes; uploaded to your storage after it.")),
      ),
    ),
    err,
    h("div", { class: "actions" }, button, h("a", { class: "btn ghost", href: "#/jobs" }, "Cancel")),
  );

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const isScript = typeScript.checked;
    const spec = {
      type: isScript ? "script" : "container",
      name: name.value.trim(),
      params: isScript
        ? { script_content: script.value, script_interpreter: interp.value.trim() || "bash" }
        : { docker_image: image.value.trim(), ...(command.value.trim() ? { docker_command: command.value.trim() } : {}) },
      resources: Object.fromEntries(
        Object.entries({ gpu_count: num(gpuCount), gpu_model: gpuModel.value.trim() || undefined, min_vram_mb: num(vram), cpu: num(cpu), memory_mb: num(memory) }).filter(([, v]) => v !== undefined),
      ),
      priority: num(priority) ?? 5,
      max_retries: num(retries) ?? 3,
      tags: list(tags.value),
      inputs: list(inputs.value),
      outputs: list(outputs.value),
    };
    if (timeout.value) spec.timeout_seconds = num(timeout);
    if (maxPrice.value) spec.max_price_per_hour = num(maxPrice);
    button.disabled = true;
    try {
      const res = await api("/api/v1/jobs", { method: "POST", body: spec });
      toast("Job submitted.");
      location.hash = `#/jobs/${res.job_id}`;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  });

  const draft = takeDraft();
  if (draft) {
    prefill(form, draft);
    syncType();
  }
  main.append(pageTitle(draft ? "Rerun a job" : "Submit a job"), form);
  name.focus();
}
