; Inno Setup 6 script: a per-user installer (no administrator rights) for the PyInstaller folder.
;
;   pyinstaller --noconfirm packaging\pyinstaller\omen.spec
;   iscc /DAppVersion=0.1.0 packaging\windows\omen-local.iss
;
; Installs dist\omen-local into %LOCALAPPDATA%\Programs\OMEN Local, adds a Start-menu entry
; for the tray app, optionally starts it at sign-in (HKCU\...\Run) and puts omen, glyph and
; rune on the user's PATH. The uninstaller removes all of that; config and data stay.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define AppName "OMEN Local"
#define Bundle AddBackslash(SourcePath) + "..\..\dist\omen-local"
#if FileExists(Bundle + "\omen-app.exe")
  #define HasApp
  #define MainExe "omen-app.exe"
#else
  #pragma message "dist\omen-local has no omen-app.exe (no tray app yet): installing the console programs only"
  #define MainExe "omen.exe"
#endif

[Setup]
AppId={{6F1C2B9E-3D4A-4E7B-9A51-0E8C7D2F4B13}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=OMEN Local
; Per user: no UAC prompt, installs under %LOCALAPPDATA%\Programs, registry under HKCU.
PrivilegesRequired=lowest
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
UsePreviousAppDir=yes
OutputDir={#SourcePath}\..\..\dist
OutputBaseFilename=OMEN-Local-{#AppVersion}-windows-setup
SetupIconFile={#SourcePath}\..\..\resources\icons\omen.ico
UninstallDisplayIcon={app}\{#MainExe}
UninstallDisplayName={#AppName}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; PATH changes reach new consoles without signing out.
ChangesEnvironment=yes
; A running tray app holds its files: ask to close it before files are replaced.
CloseApplications=yes
RestartApplications=no

[Tasks]
#ifdef HasApp
Name: "startup"; Description: "Start {#AppName} when I sign in"; GroupDescription: "Start-up:"; Flags: unchecked
#endif
Name: "addtopath"; Description: "Add omen, glyph and rune to my PATH"; GroupDescription: "Command line:"

[Files]
Source: "{#Bundle}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
#ifdef HasApp
Name: "{group}\{#AppName}"; Filename: "{app}\omen-app.exe"; IconFilename: "{app}\omen-app.exe"
#endif
Name: "{group}\OMEN doctor"; Filename: "{cmd}"; Parameters: "/k ""{app}\omen.exe"" doctor"; IconFilename: "{app}\omen.exe"
Name: "{group}\Uninstall {#AppName}"; Filename: "{uninstallexe}"

[Registry]
#ifdef HasApp
; Start at sign-in: the current user's Run key, removed by the uninstaller.
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; \
    ValueName: "{#AppName}"; ValueData: """{app}\omen-app.exe"""; Flags: uninsdeletevalue; Tasks: startup
#endif
; The user's PATH (not the machine's: no admin).
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; \
    ValueData: "{olddata};{app}"; Check: NotOnPath(ExpandConstant('{app}')); Tasks: addtopath

[Run]
#ifdef HasApp
Filename: "{app}\omen-app.exe"; Description: "Start {#AppName} now"; Flags: nowait postinstall skipifsilent
#else
Filename: "{cmd}"; Parameters: "/k ""{app}\omen.exe"" doctor"; Description: "Run omen doctor now"; \
    Flags: nowait postinstall skipifsilent unchecked
#endif

[UninstallRun]
; Stop the tray app (and a headless omen) so their files can be removed.
Filename: "{sys}\taskkill.exe"; Parameters: "/F /IM omen-app.exe"; Flags: runhidden; RunOnceId: "StopTray"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /IM omen.exe"; Flags: runhidden; RunOnceId: "StopOmen"

[UninstallDelete]
; Python writes __pycache__ next to files that are imported from source.
Type: filesandordirs; Name: "{app}"

[Code]
function NotOnPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

procedure RemoveFromPath(Dir: string);
var
  Path: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
    exit;
  P := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';');
  if P = 0 then
    exit;
  { P is the position in ';'+Path+';': the entry starts at P in Path (after our leading ';'). }
  Delete(Path, P, Length(Dir));
  { Drop the separator the entry leaves behind. }
  if (P <= Length(Path)) and (Copy(Path, P, 1) = ';') then
    Delete(Path, P, 1)
  else if (P > 1) and (Copy(Path, P - 1, 1) = ';') then
    Delete(Path, P - 1, 1);
  RegWriteExpandStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path);
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
