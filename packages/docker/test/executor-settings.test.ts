// How an executor's Docker options are read by the drivers (no engine needed).
import { expect, test } from 'vitest';
import { backendOf } from '../src/executor-settings.js';

test("a Swarm executor's placement constraints do not make the drivers drop its other options", () => {
  const o = {
    backend: { constraints: ['node.hostname==s2'], stopGraceSeconds: 3, capAdd: ['NET_ADMIN'], allowNewPrivileges: true },
  };
  expect(backendOf(o)).toEqual({ stopGraceSeconds: 3, capAdd: ['NET_ADMIN'], allowNewPrivileges: true });
});

test("a container executor's constraints (host labels) are read with the rest", () => {
  const o = { backend: { constraints: { zone: 'a' }, stopGraceSeconds: 2 } };
  expect(backendOf(o)).toEqual({ constraints: { zone: 'a' }, stopGraceSeconds: 2 });
});
