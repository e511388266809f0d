; biossvc.asm -- the BIOS services other than INT 13h a boot loader calls,
; with the answers SeaBIOS 1.16.2 gives under QEMU 7.2 (-m 128, no
; floppy): INT 11h (equipment), INT 12h (base memory), INT 15h (A20
; 2400..2403, 87 block move (above 1 MiB and back; the GDT it fills),
; 86 wait, 88 extended memory, E801, the E820 map walked to its end and
; its parameter checks, C0 configuration table, C1 EBDA, 4F, 52, 90/91,
; unknown functions), INT 16h (keystroke status, shift flags, a key stored
; with AH=05 and read back), INT 1Ah (tick count set and read, RTC time and
; date: only CF, the values are the host's clock), INT 13h on drive
; numbers that are no disk (floppies 00/01, E0, 81) and the statuses each
; leaves; then the BIOS data area (the tick count masked), the first bytes
; of the EBDA and F000:FFF0..FFFF.  Per call, to debugcon: the vector,
; EAX, EBX, ECX, EDX, EDI, ES, the flags' CF and ZF (bits 0 and 6), and
; with F_BUF the first 24 bytes of the buffer at ES:DI (pre-filled with
; 0xEE; F_BX: 10 bytes at ES:BX; F_48: 48 bytes at ES:DI); vector 0xFF
; is no call but the sum of the 256 words at ES:DI.  Registers named by
; the entry's mask print as 0 (host-dependent).
; Sector 0 loads the table with INT 13h.  tests/data/kvm/record.sh
; re-records it.
BITS 16
ORG 0x7C00
DBGC equ 0xE9
BUF  equ 0x9000
M_AX  equ 0x01       ; mask EAX
M_CX  equ 0x02       ; mask ECX
M_DX  equ 0x04       ; mask EDX
F_BUF equ 0x08       ; print 24 bytes at ES:DI
F_BX  equ 0x10       ; print 10 bytes at ES:BX
F_48  equ 0x20       ; print 48 bytes at ES:DI
  cli
  cld
  xor ax, ax
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov sp, 0x7000
  mov ax, 0x0200 + (data_end - table + 511) / 512
  mov cx, 0x0002
  xor dh, dh
  mov bx, 0x7E00
  int 0x13
  mov bp, table
next:
  cmp bp, table_end
  jae done
  ; the buffer: 0xEE
  mov di, BUF
  mov cx, 32
  mov al, 0xEE
  rep stosb
  mov al, [bp]
  cmp al, 0xFF
  je sum
  mov [intn + 1], al
  jmp short $+2
  mov eax, [bp + 2]
  mov ebx, [bp + 6]
  mov ecx, [bp + 10]
  mov edx, [bp + 14]
  mov di, [bp + 20]
  push word [bp + 18]
  pop es
  xor esi, esi
  mov si, di
  push bp
  ; CF set, ZF clear on entry
  push eax
  mov al, 1
  cmp al, 0
  pop eax
  stc
intn:
  int 0x00
  pop bp
  pushf
  push es
  push edx
  push ecx
  mov si, [bp + 1]
  and si, 0xFF
  test si, M_AX
  jz .a
  xor eax, eax
.a:
  push ax
  mov al, [bp]
  out DBGC, al
  pop ax
  call put4             ; EAX
  mov eax, ebx
  call put4
  pop eax               ; ECX
  test si, M_CX
  jz .c
  xor eax, eax
.c:
  call put4
  pop eax               ; EDX
  test si, M_DX
  jz .d
  xor eax, eax
.d:
  call put4
  mov eax, edi
  call put4
  pop ax                ; ES
  call put2
  pop ax                ; flags
  and al, 0x41
  out DBGC, al
  mov cx, 24
  test si, F_48
  jz .n48
  mov cx, 48
  or si, F_BUF
.n48:
  test si, F_BX
  jz .nbx
  mov di, bx
  or si, F_BUF
  mov cx, 10
.nbx:
  test si, F_BUF
  jz .nobuf
  push ds
  push es
  pop ds
  push si
  mov si, di
.b:
  lodsb
  out DBGC, al
  loop .b
  pop si
  pop ds
.nobuf:
  xor ax, ax
  mov es, ax
  add bp, 22
  jmp next
sum:
  ; vector 0xFF: no call, the 16-bit sum of the 256 words at ES:DI
  ; (ES = the entry's, DI its DI) to debugcon
  push word [bp + 18]
  pop es
  mov si, [bp + 20]
  xor ax, ax
  mov cx, 256
.s:
  add ax, [es:si]
  add si, 2
  loop .s
  call put2
  xor ax, ax
  mov es, ax
  add bp, 22
  jmp next
done:
  ; the BIOS data area, the tick count (0x46C..0x470) masked
  xor si, si
  mov ds, si
  mov si, 0x400
.bda:
  lodsb
  cmp si, 0x46C
  jbe .p
  cmp si, 0x471
  ja .p
  xor al, al
.p:
  out DBGC, al
  cmp si, 0x500
  jb .bda
  ; the EBDA's first 16 bytes
  push word [0x40E]
  pop ds
  xor si, si
  mov cx, 16
.e:
  lodsb
  out DBGC, al
  loop .e
  ; F000:FFF0..FFFF
  push word 0xF000
  pop ds
  mov si, 0xFFF0
  mov cx, 16
.f:
  lodsb
  out DBGC, al
  loop .f
  mov al, 0x10
  out 0xF4, al
  cli
  hlt
put4:
  call put2
  shr eax, 16
put2:
  out DBGC, al
  mov al, ah
  out DBGC, al
  ret
  times 510-($-$$) db 0
  dw 0xAA55

%macro CALL 8   ; int, mask, eax, ebx, ecx, edx, es, di
  db %1, %2
  dd %3, %4, %5, %6
  dw %7, %8
%endmacro
SMAP equ 0x534D4150
table:
  CALL 0x11, 0, 0x11111111, 0, 0, 0, 0, 0
  CALL 0x12, 0, 0x12121212, 0, 0, 0, 0, 0
  CALL 0x15, 0, 0x2402, 0, 0, 0, 0, 0          ; A20 state
  CALL 0x15, 0, 0x2403, 0, 0, 0, 0, 0          ; A20 support
  CALL 0x15, 0, 0x2400, 0, 0, 0, 0, 0          ; A20 off
  CALL 0x15, 0, 0x2402, 0, 0, 0, 0, 0
  CALL 0x15, 0, 0x2401, 0, 0, 0, 0, 0          ; A20 on
  CALL 0x15, 0, 0x2402, 0, 0, 0, 0, 0
  CALL 0x15, 0, 0x2404, 0, 0, 0, 0, 0          ; unknown
  CALL 0x15, 0, 0x8800, 0, 0, 0, 0, 0          ; extended memory
  CALL 0x15, 0, 0xE801, 0, 0, 0, 0, 0
  CALL 0x15, F_BUF, 0xE820, 0, 20, SMAP, 0, BUF  ; the map
  CALL 0x15, F_BUF, 0xE820, 1, 24, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 2, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 3, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 4, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 5, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 6, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 7, 20, SMAP, 0, BUF
  CALL 0x15, F_BUF, 0xE820, 0, 19, SMAP, 0, BUF  ; buffer too small
  CALL 0x15, F_BUF, 0xE820, 0, 20, 0x12345678, 0, BUF  ; no SMAP
  CALL 0x15, F_BUF, 0x1234E820, 0x10000, 20, SMAP, 0, BUF  ; high halves
  CALL 0x15, 0, 0xE802, 0, 0, 0, 0, 0          ; unknown E8
  CALL 0x15, F_48, 0x8700, 0, 256, 0, 0, gdt1  ; move 0x7C00 -> 0x200000
  CALL 0x15, F_48, 0x8700, 0, 255, 0, 0, gdt2  ; 0x200000 -> 0x30000
  CALL 0xFF, 0, 0, 0, 0, 0, 0x3000, 0          ; its sum
  CALL 0x15, F_BX, 0xC000, 0, 0, 0, 0, 0          ; configuration table
  CALL 0x15, 0, 0xC100, 0, 0, 0, 0, 0          ; EBDA segment
  CALL 0x15, 0, 0x4F3B, 0, 0, 0, 0, 0          ; keyboard intercept
  CALL 0x15, 0, 0x5200, 0, 0, 0, 0, 0          ; eject
  CALL 0x15, 0, 0x8600, 0, 0x0001, 0x0000, 0, 0  ; wait 65 ms
  CALL 0x15, 0, 0x8600, 0, 0, 0, 0, 0          ; wait 0
  CALL 0x15, 0, 0x9000, 0, 0, 0, 0, 0
  CALL 0x15, 0, 0x9100, 0, 0, 0, 0, 0
  CALL 0x15, 0, 0x4100, 0, 0, 0, 0, 0          ; unknown
  CALL 0x15, 0, 0xDA00, 0, 0, 0, 0, 0          ; unknown
  CALL 0x16, 0, 0x0100, 0, 0, 0, 0, 0          ; keystroke? none
  CALL 0x16, 0, 0x1100, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x0200, 0, 0, 0, 0, 0          ; shift flags
  CALL 0x16, 0, 0x1200, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x0900, 0, 0, 0, 0, 0          ; functionality
  CALL 0x16, 0, 0x0500, 0, 0x1C0D, 0, 0, 0     ; store Enter
  CALL 0x16, 0, 0x0100, 0, 0, 0, 0, 0          ; now there is one
  CALL 0x16, 0, 0x1100, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x0000, 0, 0, 0, 0, 0          ; read it
  CALL 0x16, 0, 0x0100, 0, 0, 0, 0, 0          ; gone
  CALL 0x16, 0, 0x0500, 0, 0xE02F, 0, 0, 0     ; an extended key
  CALL 0x16, 0, 0x0100, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x1000, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x9200, 0, 0, 0, 0, 0
  CALL 0x16, 0, 0x6F08, 0, 0, 0, 0, 0
  CALL 0x1A, 0, 0x0100, 0, 0x0012, 0x3400, 0, 0  ; set the tick count
  CALL 0x1A, M_DX, 0x0000, 0, 0, 0, 0, 0       ; read it
  CALL 0x1A, M_AX | M_CX | M_DX, 0x0200, 0, 0, 0, 0, 0  ; RTC time
  CALL 0x1A, M_AX | M_CX | M_DX, 0x0400, 0, 0, 0, 0, 0  ; RTC date
  CALL 0x1A, 0, 0x0800, 0, 0, 0, 0, 0          ; unknown
  CALL 0x13, 0, 0x0000, 0, 0, 0x0000, 0, 0     ; floppy 0: reset
  CALL 0x13, 0, 0x0100, 0, 0, 0x0000, 0, 0     ; its status
  CALL 0x13, 0, 0x0100, 0, 0, 0x0080, 0, 0     ; the disk's
  CALL 0x13, 0, 0x0201, BUF, 1, 0x0000, 0, 0   ; floppy read
  CALL 0x13, 0, 0x0800, 0, 0, 0x0000, 0, 0     ; floppy parameters
  CALL 0x13, 0, 0x0800, 0, 0, 0x0001, 0, 0
  CALL 0x13, 0, 0x1500, 0, 0, 0x0000, 0, 0     ; floppy type
  CALL 0x13, 0, 0x4100, 0x55AA, 0, 0x0001, 0, 0
  CALL 0x13, 0, 0x0100, 0, 0, 0x0000, 0, 0
  CALL 0x13, 0, 0x0100, 0, 0, 0x0080, 0, 0
  CALL 0x13, 0, 0x4100, 0x55AA, 0, 0x00E0, 0, 0  ; CD
  CALL 0x13, 0, 0x1500, 0, 0, 0x0081, 0, 0     ; disk 0x81: none
  CALL 0x13, 0, 0x4100, 0x55AA, 0, 0x0081, 0, 0
  CALL 0x13, 0, 0x0100, 0, 0, 0x0081, 0, 0
  CALL 0x13, 0, 0x0100, 0, 0, 0x0080, 0, 0
  CALL 0x13, 0, 0x1500, 0, 0, 0x0080, 0, 0
  CALL 0x13, 0, 0x0800, 0, 0, 0x007F, 0, 0
  CALL 0x13, 0, 0x0100, 0, 0, 0x0080, 0, 0
table_end:
%macro DESC 1    ; a data segment descriptor at %1, limit 0xFFFF
  dw 0xFFFF, (%1) & 0xFFFF
  db ((%1) >> 16) & 0xFF, 0x93, 0, (%1) >> 24
%endmacro
align 8
gdt1:   dq 0, 0
        DESC 0x7C00
        DESC 0x200000
        dq 0, 0
gdt2:   dq 0, 0
        DESC 0x200000
        DESC 0x30000
        dq 0, 0
data_end:
  align 512, db 0
