// Sign-up and sign-in forms. Signing up signs you in straight away; the
// token goes to localStorage (api.js) and the app re-reads /v1/me.

import { api, setSession, describe } from './api.js';
import { h, heading } from './dom.js';

function field(id, label, attrs) {
  return h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    h('input', { id, name: id, required: true, ...attrs }));
}

function authForm(main, { title, submitText, passwordAutocomplete, hint, flash, swap, onSubmit }) {
  const error = h('p', { class: 'form-error', role: 'alert', text: flash || '' });
  const submit = h('button', { type: 'submit', class: 'primary', text: submitText });
  const form = h('form', { class: 'stack auth' },
    field('username', 'Username', {
      autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false',
      minlength: '3', maxlength: '32', pattern: '[a-z0-9_]{3,32}', 'aria-describedby': 'username-hint',
    }),
    h('p', { class: 'hint', id: 'username-hint', text: hint }),
    field('password', 'Password', { type: 'password', autocomplete: passwordAutocomplete, minlength: '8', maxlength: '128' }),
    error, submit,
    h('p', { class: 'swap' }, swap));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    if (!form.checkValidity()) {
      error.textContent = !/^[a-z0-9_]{3,32}$/.test(username)
        ? 'Usernames are 3–32 lowercase letters, digits or _.'
        : 'Passwords are 8–128 characters.';
      return;
    }
    submit.disabled = true;
    error.textContent = '';
    try {
      await onSubmit(username, password);
    } catch (err) {
      error.textContent = describe(err);
      submit.disabled = false;
    }
  });
  main.append(heading(title), form);
}

async function signInWith(username, password, done) {
  const s = await api.signIn(username, password);
  setSession(s.token, s.user);
  await done();
}

/** `done()` runs after a successful sign-in (main.js: refresh /v1/me, go to the feed). */
export function signInView(main, signal, { flash, done }) {
  authForm(main, {
    title: 'Sign in', submitText: 'Sign in', passwordAutocomplete: 'current-password',
    hint: 'Lowercase letters, digits and _.', flash,
    swap: ['New here? ', h('a', { href: '#/signup', text: 'Create an account' })],
    onSubmit: (u, p) => signInWith(u, p, done),
  });
}

export function signUpView(main, signal, { done }) {
  authForm(main, {
    title: 'Create an account', submitText: 'Sign up', passwordAutocomplete: 'new-password',
    hint: '3–32 lowercase letters, digits or _. Passwords: at least 8 characters.',
    swap: ['Have an account? ', h('a', { href: '#/signin', text: 'Sign in' })],
    onSubmit: async (u, p) => {
      await api.signUp(u, p);
      await signInWith(u, p, done);
    },
  });
}
