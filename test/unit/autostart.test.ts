import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { autostartCommand, autostartEntry, autostartFile, xdgLoginItem } from '../../electron/autostart.js';
import { tempDir } from '../support/temp.js';

describe('start at login on Linux, where Electron’s login items do nothing', () => {
  it('is an XDG autostart entry in the user’s config folder', () => {
    assert.equal(autostartFile({ XDG_CONFIG_HOME: '/cfg' }, '/home/me'), '/cfg/autostart/copilot-bridge.desktop');
    assert.equal(autostartFile({}, '/home/me'), '/home/me/.config/autostart/copilot-bridge.desktop');
    // An empty value counts as unset, as the XDG spec says.
    assert.equal(autostartFile({ XDG_CONFIG_HOME: '' }, '/home/me'), '/home/me/.config/autostart/copilot-bridge.desktop');
  });

  it('starts the AppImage itself, not the folder it was mounted at this time; an unpackaged app with its folder', () => {
    const env = { APPIMAGE: '/home/me/Apps/copilot-bridge.AppImage' };
    assert.deepEqual(autostartCommand({ packaged: true, execPath: '/tmp/.mount_abc/copilot-bridge', appPath: '/tmp/.mount_abc/resources/app.asar', env }), [
      '/home/me/Apps/copilot-bridge.AppImage',
    ]);
    assert.deepEqual(autostartCommand({ packaged: true, execPath: '/opt/copilot-bridge/copilot-bridge', appPath: '/x', env: {} }), [
      '/opt/copilot-bridge/copilot-bridge',
    ]);
    assert.deepEqual(autostartCommand({ packaged: false, execPath: '/repo/node_modules/electron/dist/electron', appPath: '/repo', env: {} }), [
      '/repo/node_modules/electron/dist/electron',
      '/repo',
    ]);
  });

  it('quotes the command as the Desktop Entry spec asks: spaces, quotes, $, backslashes and % survive', () => {
    const entry = autostartEntry(['/home/me/My Apps/copilot "bridge"$1\\x 100%.AppImage']);
    assert.match(entry, /^\[Desktop Entry\]\nType=Application\nName=copilot-bridge\n/);
    const exec = /^Exec=(.*)$/m.exec(entry)?.[1];
    assert.equal(exec, '"/home/me/My Apps/copilot \\\\"bridge\\\\"\\\\$1\\\\\\\\x 100%%.AppImage"');
  });

  it('is on once written, off once removed, and off when the desktop hides it', () => {
    const file = path.join(tempDir('autostart-'), 'autostart', 'copilot-bridge.desktop');
    const item = xdgLoginItem(file, ['/opt/copilot-bridge/copilot-bridge']);
    assert.equal(item.get(), false);
    item.set(true);
    assert.equal(item.get(), true);
    assert.match(readFileSync(file, 'utf8'), /^Exec="\/opt\/copilot-bridge\/copilot-bridge"$/m);
    item.set(false);
    assert.equal(existsSync(file), false);
    assert.equal(item.get(), false);
    item.set(false);
    // A desktop's own startup settings switch an entry off with Hidden=true.
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, '[Desktop Entry]\nType=Application\nExec=x\nHidden=true\n');
    assert.equal(item.get(), false);
  });

  it('says which folder it could not create, at once, where the config folder takes none (/proc)', { skip: process.platform !== 'linux' }, () => {
    const item = xdgLoginItem('/proc/copilot-bridge-config/autostart/copilot-bridge.desktop', ['/usr/bin/copilot-bridge']);
    assert.throws(() => item.set(true), /could not create the folder \/proc\/copilot-bridge-config \(ENOENT/);
  });
});
