// The programs the tests run for real, from the system's packages: Chromium for the dashboard
// tests (Playwright cannot download its own browsers everywhere); nginx, HAProxy, Prometheus (with
// promtool), Alertmanager (with amtool), systemd-analyze, openssl and logrotate for the deployment
// tests; redis-server for the limits shared between instances. Installs the missing ones with
// apt-get where it can (as root, or with sudo that asks no password), so `npm test` works on a
// fresh Debian or Ubuntu machine; elsewhere it says what to install.
import { spawnSync } from 'node:child_process';
import os from 'node:os';

/** Each program, and the Debian package that brings it. */
const PROGRAMS = {
  chromium: 'chromium',
  nginx: 'nginx',
  haproxy: 'haproxy',
  prometheus: 'prometheus',
  promtool: 'prometheus',
  'prometheus-alertmanager': 'prometheus-alertmanager',
  amtool: 'prometheus-alertmanager',
  'systemd-analyze': 'systemd',
  openssl: 'openssl',
  logrotate: 'logrotate',
  'redis-server': 'redis-server',
};

/** What the deployment tests cannot do without (the dashboard and Redis tests say they skip instead). */
const DEPLOY_PROGRAMS = ['nginx', 'haproxy', 'prometheus', 'promtool', 'prometheus-alertmanager', 'amtool', 'systemd-analyze', 'openssl', 'logrotate'];

/** PATH as root's, where nginx, haproxy and logrotate live (/usr/sbin), whoever runs the tests. */
const SEARCH_PATH = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].join(':');

const found = (program) => spawnSync('sh', ['-c', `command -v ${program}`], { env: { ...process.env, PATH: SEARCH_PATH }, stdio: 'ignore' }).status === 0;

function missingPrograms() {
  return Object.keys(PROGRAMS).filter((program) => !found(program));
}

/** apt-get as root, or through sudo when it asks no password; null when neither can install. */
function aptGet() {
  if (!found('apt-get')) return null;
  if (os.userInfo().uid === 0) return ['apt-get'];
  return found('sudo') && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0 ? ['sudo', 'apt-get'] : null;
}

/** Installs what is missing where apt-get can; exits when the deployment tests are to run and still lack a program. */
export function ensureTestTools({ deploy }) {
  let missing = missingPrograms();
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((program) => PROGRAMS[program]))];
  const apt = aptGet();
  if (apt !== null) {
    console.log(`> installing ${packages.join(', ')} (apt-get)`);
    const [command, ...prefix] = apt;
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    spawnSync(command, [...prefix, 'update', '-qq'], { stdio: 'inherit', env });
    spawnSync(command, [...prefix, 'install', '-y', '-qq', ...packages], { stdio: ['ignore', 'ignore', 'inherit'], env });
    missing = missingPrograms();
  }
  if (missing.length === 0) return;
  const needed = [...new Set(missing.map((program) => PROGRAMS[program]))].join(' ');
  const lacking = missing.filter((program) => DEPLOY_PROGRAMS.includes(program));
  if (deploy && lacking.length > 0) {
    console.error(`The deployment tests run ${lacking.join(', ')}, which this machine lacks. Debian/Ubuntu: sudo apt-get install ${needed}`);
    process.exit(1);
  }
  console.log(`> ${missing.join(', ')} missing: the tests that run them skip (Debian/Ubuntu: sudo apt-get install ${needed})`);
}
