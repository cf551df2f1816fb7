import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { makeFolder } from '../src/files.js';

/**
 * Start at login on Linux, where Electron's login item settings do nothing (they are macOS's and
 * Windows'): an entry in the XDG autostart folder, which the desktops start at login.
 */

/** $XDG_CONFIG_HOME/autostart (an empty value counts as unset), else ~/.config/autostart. */
export function autostartFile(env: NodeJS.ProcessEnv, home: string): string {
  const config = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : path.join(home, '.config');
  return path.join(config, 'autostart', 'copilot-bridge.desktop');
}

/**
 * What starts the app: an AppImage by its own file (its executable lives in a folder mounted anew
 * at each start), a package by its executable, an unpackaged app by Electron with the app's folder.
 */
export function autostartCommand(app: { packaged: boolean; execPath: string; appPath: string; env: NodeJS.ProcessEnv }): string[] {
  if (!app.packaged) return [app.execPath, app.appPath];
  return [app.env.APPIMAGE !== undefined && app.env.APPIMAGE !== '' ? app.env.APPIMAGE : app.execPath];
}

/**
 * One Exec argument: quoted, with ", `, $ and \ escaped inside the quotes and % doubled (a field
 * code otherwise); then every backslash doubled again, as Exec is a string value, unescaped first.
 */
function execArgument(arg: string): string {
  const quoted = `"${arg.replace(/["`$\\]/g, '\\$&').replace(/%/g, '%%')}"`;
  return quoted.replace(/\\/g, '\\\\');
}

export function autostartEntry(command: readonly string[]): string {
  return ['[Desktop Entry]', 'Type=Application', 'Name=copilot-bridge', `Exec=${command.map(execArgument).join(' ')}`, 'Terminal=false', ''].join('\n');
}

/** The login item as a file: on while it exists, unless a desktop's startup settings hid it. */
export function xdgLoginItem(file: string, command: readonly string[]): { get(): boolean; set(enabled: boolean): void } {
  return {
    get: () => existsSync(file) && !/^Hidden\s*=\s*true\s*$/m.test(readFileSync(file, 'utf8')),
    set: (enabled) => {
      if (!enabled) {
        rmSync(file, { force: true });
        return;
      }
      makeFolder(path.dirname(file));
      writeFileSync(file, autostartEntry(command));
    },
  };
}
