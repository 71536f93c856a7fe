// A job spec handed from "Rerun" to the submit form, in memory (never stored in the browser).
let draft = null;

export function setDraft(spec) {
  draft = spec;
}

export function takeDraft() {
  const d = draft;
  draft = null;
  return d;
}
