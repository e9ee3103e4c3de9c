// Posting a photo: pick or take one, see it, add a caption, watch the
// progress bar. Files that are not images or are too large are refused
// before any byte is sent; the server's 413/415/422 get the same clear words.

import { upload, session, MAX_UPLOAD_BYTES, describe } from './api.js';
import { h, heading, toast } from './dom.js';

const MAX_CAPTION = 2200;

/** Why a file cannot be posted, or null. */
export function checkFile(file) {
  if (!file) return 'Choose a photo first.';
  // Some phones give camera photos no type: let the server judge those by
  // their bytes.
  if (file.type && !file.type.startsWith('image/')) return `“${file.name}” isn’t an image. Choose a JPEG, PNG, WebP or GIF photo.`;
  if (file.size > MAX_UPLOAD_BYTES) {
    const mb = (file.size / 1024 / 1024).toFixed(1);
    return `That photo is too large (${mb} MB). The limit is 20 MB.`;
  }
  return null;
}

export function uploadView(main, signal, go) {
  if (!session.token) {
    go('#/signin', 'Sign in to post a photo.');
    return;
  }
  let previewUrl = null;
  let job = null;
  const revoke = () => {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  };
  signal.addEventListener('abort', () => {
    revoke();
    if (job) job.abort();
  });

  const input = h('input', { type: 'file', id: 'photo', name: 'image', accept: 'image/*', capture: 'environment', 'aria-describedby': 'photo-hint' });
  const preview = h('img', { class: 'preview', alt: '', hidden: true });
  const caption = h('textarea', { id: 'caption', name: 'caption', rows: '3', maxlength: String(MAX_CAPTION), 'aria-describedby': 'caption-count' });
  const counter = h('p', { id: 'caption-count', class: 'hint', text: `0 / ${MAX_CAPTION}` });
  const error = h('p', { class: 'form-error', role: 'alert', id: 'upload-error' });
  const progress = h('progress', { max: '100', value: '0', 'aria-label': 'Upload progress', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Post' });
  const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel', hidden: true });

  const showError = (msg) => {
    error.textContent = msg || '';
    input.setAttribute('aria-invalid', msg ? 'true' : 'false');
  };

  input.addEventListener('change', () => {
    revoke();
    const file = input.files[0];
    const problem = file ? checkFile(file) : null;
    showError(problem);
    if (file && !problem) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.alt = 'Preview of the chosen photo';
      preview.hidden = false;
    } else {
      preview.removeAttribute('src');
      preview.hidden = true;
    }
  });
  // A preview that does not decode is not an image the server will take.
  preview.addEventListener('error', () => {
    if (!previewUrl) return;
    preview.hidden = true;
    showError('That file can’t be read as an image. Choose another photo.');
  });
  caption.addEventListener('input', () => {
    counter.textContent = `${caption.value.length} / ${MAX_CAPTION}`;
  });
  cancel.addEventListener('click', () => job && job.abort());

  const form = h('form', { class: 'stack upload', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'photo', text: 'Photo' }),
      input,
      h('p', { id: 'photo-hint', class: 'hint', text: 'JPEG, PNG, WebP or GIF, up to 20 MB.' })),
    preview,
    h('div', { class: 'field' },
      h('label', { for: 'caption', text: 'Caption' }),
      caption, counter),
    error, progress,
    h('div', { class: 'row' }, submit, cancel));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const file = input.files[0];
    const problem = checkFile(file);
    if (problem) {
      showError(problem);
      input.focus();
      return;
    }
    showError(null);
    submit.disabled = true;
    input.disabled = true;
    cancel.hidden = false;
    progress.hidden = false;
    progress.value = 0;
    job = upload(file, caption.value, (f) => { progress.value = Math.round(f * 100); });
    try {
      await job.done;
      job = null;
      toast('Posted!');
      go('#/');
    } catch (err) {
      job = null;
      if (signal.aborted) return;
      showError(err.name === 'AbortError' ? 'Upload cancelled.' : describe(err));
      submit.disabled = false;
      input.disabled = false;
      cancel.hidden = true;
      progress.hidden = true;
    }
  });

  main.append(heading('New post'), form);
}
